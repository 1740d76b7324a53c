//! Request extractors whose failures are typed [`HandlerError`]s rather than
//! axum's plain-text rejections.

use std::path::PathBuf;

use axum::extract::{FromRequest, FromRequestParts, Request};
use hearth_agent_protocol::paths::parse_guest_path;
use hearth_agent_protocol::ErrorCode;
use http::request::Parts;
use percent_encoding::percent_decode;
use serde::de::DeserializeOwned;

use crate::error::HandlerError;

/// A JSON body. Too large: 413; malformed: 400 naming the problem.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = HandlerError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                    HandlerError::new(ErrorCode::PayloadTooLarge, "request body too large")
                } else {
                    HandlerError::bad_request(format!("read body: {e}"))
                }
            })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| HandlerError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// Query parameters, deserialized with typed errors.
#[derive(Debug, Clone)]
pub struct QueryArgs<T>(pub T);

impl<S, T> FromRequestParts<S> for QueryArgs<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = HandlerError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded_from_str(q)
            .map(QueryArgs)
            .map_err(|e| HandlerError::bad_request(format!("invalid query: {e}")))
    }
}

fn serde_urlencoded_from_str<T: DeserializeOwned>(q: &str) -> Result<T, String> {
    axum::extract::Query::<T>::try_from_uri(
        &format!("/?{q}")
            .parse::<http::Uri>()
            .map_err(|e| e.to_string())?,
    )
    .map(|axum::extract::Query(t)| t)
    .map_err(|e| e.body_text())
}

/// The `path` query parameter as a validated guest path. Percent-encoded bytes
/// decode verbatim, so non-UTF-8 names are reachable.
#[derive(Debug, Clone)]
pub struct QueryPath(pub PathBuf);

impl<S: Send + Sync> FromRequestParts<S> for QueryPath {
    type Rejection = HandlerError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let raw = query_param_bytes(parts.uri.query().unwrap_or(""), "path")
            .ok_or_else(|| HandlerError::new(ErrorCode::InvalidPath, "missing path parameter"))?;
        Ok(QueryPath(parse_guest_path(&raw)?))
    }
}

/// The raw bytes of query parameter `key` (first occurrence).
pub fn query_param_bytes(query: &str, key: &str) -> Option<Vec<u8>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_decode(v.as_bytes()).collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_bytes_decode_non_utf8() {
        assert_eq!(
            query_param_bytes("a=1&path=%2Ftmp%2F%FF", "path"),
            Some(b"/tmp/\xff".to_vec())
        );
        assert_eq!(query_param_bytes("a=1", "path"), None);
        assert_eq!(
            query_param_bytes("path=/a+b", "path"),
            Some(b"/a+b".to_vec())
        );
    }
}
