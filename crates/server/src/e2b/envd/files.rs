//! envd's REST file transfer: `GET /files?path=` streams a file down;
//! `POST /files[?path=]` takes a multipart upload (one file to `path`, or
//! each part to the path its file name holds) and answers the entries
//! written. Errors are `{code, message}` with the HTTP status.

use axum::body::Body;
use axum::extract::{Multipart, Query};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hearth_agent_protocol::WriteFileRequest;
use serde::Deserialize;
use serde_json::json;

use super::Envd;

/// The largest file one upload part may carry (held in memory).
const MAX_UPLOAD: usize = 256 << 20;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct FileQuery {
    path: Option<String>,
}

fn fail(status: StatusCode, message: impl Into<String>) -> Response {
    let body = json!({ "code": status.as_u16(), "message": message.into() });
    (status, Json(body)).into_response()
}

fn from_core(e: crate::core::error::Error) -> Response {
    fail(crate::error::status_of(e.kind), e.message)
}

pub async fn download(envd: Envd, Query(q): Query<FileQuery>) -> Response {
    let Some(path) = q.path.filter(|p| !p.is_empty()) else {
        return fail(StatusCode::BAD_REQUEST, "path is required");
    };
    let path = envd.absolute(&path);
    let guest = match envd.guest(false).await {
        Ok(g) => g,
        Err(e) => return from_core(e),
    };
    match guest.read_file(path.as_bytes()).await {
        Ok(bytes) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            Body::from_stream(bytes),
        )
            .into_response(),
        Err(e) => from_core(e),
    }
}

pub async fn upload(envd: Envd, Query(q): Query<FileQuery>, mut form: Multipart) -> Response {
    let guest = match envd.guest(true).await {
        Ok(g) => g,
        Err(e) => return from_core(e),
    };
    let mut written = Vec::new();
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return fail(StatusCode::BAD_REQUEST, format!("multipart body: {e}")),
        };
        let target = match (&q.path, field.file_name()) {
            (Some(p), _) if !p.is_empty() => p.clone(),
            (_, Some(name)) if !name.is_empty() => name.to_string(),
            _ => return fail(StatusCode::BAD_REQUEST, "path is required"),
        };
        let path = envd.absolute(&target);
        let content = match field.bytes().await {
            Ok(b) if b.len() <= MAX_UPLOAD => b,
            Ok(_) => {
                return fail(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("a file part is limited to {MAX_UPLOAD} bytes"),
                )
            }
            Err(e) => return fail(StatusCode::BAD_REQUEST, format!("multipart body: {e}")),
        };
        let req = WriteFileRequest {
            path: path.clone(),
            content: hearth_agent_protocol::Base64Bytes(content.to_vec()),
            mode: None,
        };
        if let Err(e) = guest.write_file(&req).await {
            return from_core(e);
        }
        let name = path.rsplit('/').next().unwrap_or("").to_string();
        written.push(json!({ "name": name, "type": "file", "path": path }));
    }
    if written.is_empty() {
        return fail(StatusCode::BAD_REQUEST, "no file in the upload");
    }
    Json(written).into_response()
}
