//! One module per resource the agent serves.

pub mod archive;
pub mod exec;
pub mod files;
pub mod lifecycle;
pub mod processes;
pub mod pty;
pub mod tunnel;
pub mod watch;

use std::sync::Arc;

/// State every handler receives.
pub type AgentState = axum::extract::State<Arc<crate::Agent>>;
/// Router type handler modules return.
pub type AgentRouter = axum::Router<Arc<crate::Agent>>;
