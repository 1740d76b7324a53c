//! File calls (being written).

/// Percent-encodes raw bytes for a query value (`/` kept as is).
pub fn encode_query_bytes(bytes: &[u8]) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::percent_encode(bytes, SET).to_string()
}
