//! E2B's envd protocol, served host-side (see [`super`]).
