//! The REST client the client subcommands share (`sandbox`, `template`,
//! `preview`, and `up`'s demo): where the server is, which key to send,
//! errors as one line with the server's message, code and request id, and
//! a line splitter for server-sent event streams.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

/// Runs a client command's future on a fresh runtime.
pub fn block_on<T>(fut: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Runtime::new()
        .context("start the async runtime")?
        .block_on(fut)
}

/// The connection flags every client subcommand takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Server URL (or HEARTH_BASE_URL; default http://127.0.0.1:7070).
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// API key (or HEARTH_API_KEY; else ./data/admin.key).
    #[arg(long, global = true)]
    pub api_key: Option<String>,
    /// JSON output for scripts.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub key: String,
}

impl Api {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Api> {
        let base = args
            .url
            .clone()
            .or_else(|| std::env::var("HEARTH_BASE_URL").ok())
            .unwrap_or_else(|| "http://127.0.0.1:7070".into());
        let key = match args
            .api_key
            .clone()
            .or_else(|| std::env::var("HEARTH_API_KEY").ok())
        {
            Some(k) => k,
            None => std::fs::read_to_string(PathBuf::from("data/admin.key"))
                .map(|k| k.trim().to_string())
                .context("no API key: pass --api-key, set HEARTH_API_KEY, or run where data/admin.key is")?,
        };
        Ok(Api::with(&base, &key))
    }

    pub fn with(base: &str, key: &str) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
            key: key.to_string(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    /// Sends `req` with the key and returns the response when it is a
    /// success, else the server's error as one line.
    pub async fn response(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<reqwest::Response> {
        let resp = req
            .bearer_auth(&self.key)
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Err(ApiError { status, body }.into())
    }

    /// Sends `req` and returns the JSON answer.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let text = self
            .response(req)
            .await?
            .text()
            .await
            .context("read the answer")?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(self.http.post(self.url(path)).json(&body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(self.http.put(self.url(path)).json(&body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(self.http.patch(self.url(path)).json(&body)).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.delete(self.url(path))).await
    }

    /// Opens an event stream at `req` (with `Accept: text/event-stream`).
    pub async fn events(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Events> {
        let resp = self
            .response(req.header("accept", "text/event-stream"))
            .await?;
        Ok(Events {
            resp,
            buf: Vec::new(),
            kind: String::new(),
        })
    }
}

/// A request the server answered with an error; shown as
/// [`error_line`], and its code is there for a caller that handles one.
#[derive(Debug)]
pub struct ApiError {
    pub status: reqwest::StatusCode,
    pub body: Value,
}

impl ApiError {
    /// The error's `code` (`not_found`, `validation_error`, ...).
    pub fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&error_line(self.status, &self.body))
    }
}

impl std::error::Error for ApiError {}

/// One line for a failed request: the server's message and field details,
/// then the status, the error code and the request id.
pub fn error_line(status: reqwest::StatusCode, v: &Value) -> String {
    let e = &v["error"];
    let mut msg = match e["message"].as_str() {
        Some(m) => m.to_string(),
        None => match v.as_str() {
            Some(text) if !text.trim().is_empty() => text.trim().to_string(),
            _ => "request failed".to_string(),
        },
    };
    if let Some(details) = e["details"].as_array() {
        for d in details {
            let detail = format!(
                "{}: {}",
                d["field"].as_str().unwrap_or("?"),
                d["message"].as_str().unwrap_or("")
            );
            // A one-field error's message is already that detail.
            if !msg.contains(&detail) {
                msg.push_str(&format!("; {detail}"));
            }
        }
    }
    format!(
        "{msg} ({status}, {}, request {})",
        e["code"].as_str().unwrap_or("error"),
        e["request_id"].as_str().unwrap_or("-")
    )
}

/// A server-sent event stream read frame by frame.
pub struct Events {
    resp: reqwest::Response,
    /// Bytes not yet split into lines (a chunk may end mid-character).
    buf: Vec<u8>,
    kind: String,
}

impl Events {
    /// The next event as (event name, JSON data), or `None` at the end.
    pub async fn next(&mut self) -> anyhow::Result<Option<(String, Value)>> {
        loop {
            while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.buf.drain(..=end).collect();
                let line = String::from_utf8_lossy(&raw);
                let line = line.trim_end_matches(['\r', '\n']);
                if let Some(k) = line.strip_prefix("event:") {
                    self.kind = k.trim().to_string();
                } else if let Some(d) = line.strip_prefix("data:") {
                    let v = serde_json::from_str(d.trim()).unwrap_or(Value::Null);
                    return Ok(Some((std::mem::take(&mut self.kind), v)));
                }
            }
            match self.resp.chunk().await.context("read the event stream")? {
                Some(chunk) => self.buf.extend_from_slice(&chunk),
                None => return Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_error_line_says_each_detail_once() {
        let one = json!({"error": {
            "code": "validation_failed",
            "message": "template_id: unknown template \"nosuch\"",
            "details": [{"field": "template_id", "message": "unknown template \"nosuch\""}],
            "request_id": "req_1",
        }});
        assert_eq!(
            error_line(reqwest::StatusCode::UNPROCESSABLE_ENTITY, &one),
            "template_id: unknown template \"nosuch\" (422 Unprocessable Entity, validation_failed, request req_1)"
        );
        let two = json!({"error": {
            "code": "validation_failed",
            "message": "2 fields are invalid",
            "details": [
                {"field": "cpu_count", "message": "must be 1-8"},
                {"field": "memory_mb", "message": "must be 128-8192"},
            ],
        }});
        assert_eq!(
            error_line(reqwest::StatusCode::UNPROCESSABLE_ENTITY, &two),
            "2 fields are invalid; cpu_count: must be 1-8; memory_mb: must be 128-8192 (422 Unprocessable Entity, validation_failed, request -)"
        );
    }
}
