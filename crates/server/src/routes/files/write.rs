//! Writes: one file (JSON or a streamed raw body), many at once, and
//! directory changes (mkdir, remove, rename).

use super::*;

/// `content` or `content_base64`, not both.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct WriteBody {
    /// An absolute guest path, without NUL; parents are made.
    #[schema(value_type = String, required = true, pattern = r"^/[^\u0000]*$", example = "/workspace/hello.txt")]
    pub path: Option<String>,
    /// UTF-8 text, written verbatim (base64 on the legacy `POST /files`).
    pub content: Option<String>,
    #[schema(content_encoding = "base64")]
    pub content_base64: Option<String>,
    #[schema(schema_with = crate::routes::openapi::file_mode::<{ MAX_MODE as i64 }>)]
    pub mode: Option<Value>,
}

impl WriteBody {
    /// `legacy`: `content` is base64 (the old `/files` route), not text.
    pub fn validate(self, legacy: bool) -> ApiResult<WriteFileRequest> {
        let mut bad = Vec::new();
        let path = body_path("path", self.path, &mut bad);
        let content = match (self.content, self.content_base64) {
            (Some(_), Some(_)) => {
                bad.push(FieldError::new(
                    "content",
                    "give content or content_base64, not both",
                ));
                Vec::new()
            }
            (None, Some(b)) => decode_base64(&b).unwrap_or_else(|| {
                bad.push(FieldError::new("content_base64", "is not valid base64"));
                Vec::new()
            }),
            (Some(c), None) if legacy => decode_base64(&c).unwrap_or_else(|| {
                bad.push(FieldError::new("content", "is not valid base64"));
                Vec::new()
            }),
            (Some(c), None) => c.into_bytes(),
            (None, None) => {
                bad.push(FieldError::new("content", "is required"));
                Vec::new()
            }
        };
        let mode = match self.mode.as_ref().map(parse_mode).transpose() {
            Ok(m) => m.flatten(),
            Err(msg) => {
                bad.push(FieldError::new("mode", msg));
                None
            }
        };
        if !bad.is_empty() {
            return Err(ApiError::validation(bad));
        }
        Ok(WriteFileRequest {
            path,
            content: Base64Bytes::from(content),
            mode,
        })
    }
}

pub(super) async fn write_file(
    state: AppState,
    caller: Caller,
    id: String,
    req: WriteFileRequest,
) -> ApiResult<impl IntoResponse> {
    let r = state
        .guest(&caller, &id, true)
        .await?
        .write_file(&req)
        .await?;
    Ok(data(json!({ "path": r.path, "size_bytes": r.size_bytes })))
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/fs/write",
    tag = FILES,
    summary = "Write a file",
    params(SandboxId),
    request_body = WriteBody,
    responses((status = 200, description = "OK: `{path, size_bytes}`", body = Data), E404And422),
)]
pub(super) async fn fs_write(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<WriteBody>,
) -> ApiResult<impl IntoResponse> {
    let req = body.validate(false)?;
    write_file(state, caller, id, req).await
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/files",
    tag = FILES,
    summary = "Write a file (legacy; `content` is base64)",
    params(SandboxId),
    request_body = WriteBody,
    responses((status = 200, description = "OK: `{path, size_bytes}`", body = Data), E404And422),
)]
pub(super) async fn legacy_write(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<WriteBody>,
) -> ApiResult<impl IntoResponse> {
    let req = body.validate(true)?;
    write_file(state, caller, id, req).await
}

/// The request body goes to the agent chunk by chunk; the agent commits
/// the file only when the body ended cleanly.
#[utoipa::path(
    put,
    path = "/sandboxes/{id}/fs/raw",
    tag = FILES,
    summary = "Upload a file as raw bytes",
    params(
        SandboxId,
        ("path" = String, Query, description = "Absolute guest path.", pattern = r"^/"),
        ("mode" = Option<String>, Query, description = "Octal permission bits (`0644`).", pattern = r"^\s*(0o)?0*[0-7]{1,4}\s*$"),
    ),
    request_body(content = RawBytes, content_type = "application/octet-stream"),
    responses((status = 200, description = "OK: `{path, size_bytes}`", body = Data), E404And422),
)]
pub(super) async fn fs_raw(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    body: Body,
) -> ApiResult<impl IntoResponse> {
    let q = Params::parse(query.as_deref());
    let path = query_path(&q, "path", None).and_then(|p| utf8_path("path", p));
    let mode = match q.get("mode") {
        None | Some(b"") => Ok(None),
        Some(m) => std::str::from_utf8(m)
            .ok()
            .and_then(parse_octal)
            .filter(|&m| m <= MAX_MODE)
            .map(Some)
            .ok_or_else(|| FieldError::new("mode", "must be octal permission bits, e.g. 0644")),
    };
    let (path, mode) = both(path, mode)?;
    let guest = state.guest(&caller, &id, true).await?;
    let chunks = body.into_data_stream().map(|r| r.map_err(io::Error::other));
    let r = guest.write_file_stream(&path, mode, chunks).await?;
    Ok(data(json!({ "path": r.path, "size_bytes": r.size_bytes })))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct WriteManyBody {
    pub files: Vec<WriteManyItem>,
}

/// One file, as `fs/write` takes it; a file that fails its checks is
/// reported in `failed` rather than failing the request.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct WriteManyItem {
    /// An absolute guest path.
    pub path: Option<String>,
    #[schema(content_encoding = "base64")]
    pub content_base64: Option<String>,
    /// UTF-8 text, written verbatim.
    pub content: Option<String>,
    /// Permission bits: a number (`420`) or an octal string (`"0644"`).
    pub mode: Option<Value>,
}

/// Splits a write-many body into what can go to the agent and what failed
/// its checks here, each reported per file as API.md asks.
pub(super) fn split_write_many(files: Vec<WriteManyItem>) -> (Vec<WriteFileRequest>, Vec<Value>) {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for item in files {
        let path = item.path.clone().unwrap_or_default();
        let body = WriteBody {
            path: item.path,
            content: item.content,
            content_base64: item.content_base64,
            mode: item.mode,
        };
        match body.validate(false) {
            Ok(req) => ok.push(req),
            Err(e) => failed.push(json!({
                "path": path,
                "error": e.message,
                "code": e.code,
            })),
        }
    }
    (ok, failed)
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/files/write-many",
    tag = FILES,
    summary = "Write several files",
    params(SandboxId),
    request_body = WriteManyBody,
    responses((status = 200, description = "OK: `{written: [{path, size_bytes}], failed: [{path, error, code}]}`", body = Data), E404And422),
)]
pub(super) async fn write_many(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<WriteManyBody>,
) -> ApiResult<impl IntoResponse> {
    let (files, mut failed) = split_write_many(body.files);
    let r = state
        .guest(&caller, &id, true)
        .await?
        .write_many(files)
        .await?;
    let written: Vec<Value> = r
        .written
        .iter()
        .map(|w| json!({ "path": w.path, "size_bytes": w.size_bytes }))
        .collect();
    for (path, e) in r.failed {
        failed.push(json!({ "path": path, "error": e.message, "code": e.code }));
    }
    Ok(data(json!({ "written": written, "failed": failed })))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct MkdirBody {
    /// An absolute guest path, without NUL; parents are made.
    #[schema(value_type = String, required = true, pattern = r"^/[^\u0000]*$", example = "/workspace/data")]
    pub path: Option<String>,
    #[schema(schema_with = crate::routes::openapi::file_mode::<{ MAX_MODE as i64 }>)]
    pub mode: Option<Value>,
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/fs/mkdir",
    tag = FILES,
    summary = "Create a directory and its parents",
    params(SandboxId),
    request_body = MkdirBody,
    responses((status = 200, description = "OK: the directory's entry", body = Data), E404And422),
)]
pub(super) async fn mkdir(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<MkdirBody>,
) -> ApiResult<impl IntoResponse> {
    let mut bad = Vec::new();
    let path = body_path("path", body.path, &mut bad);
    let mode = body
        .mode
        .as_ref()
        .map(parse_mode)
        .transpose()
        .unwrap_or_else(|msg| {
            bad.push(FieldError::new("mode", msg));
            None
        })
        .flatten();
    if !bad.is_empty() {
        return Err(ApiError::validation(bad));
    }
    let entry = state
        .guest(&caller, &id, true)
        .await?
        .mkdir(&path, mode)
        .await?;
    Ok(data(entry_json(&entry)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct RemoveBody {
    /// An absolute guest path, without NUL.
    #[schema(value_type = String, required = true, pattern = r"^/[^\u0000]*$", example = "/workspace/old")]
    pub path: Option<String>,
    /// Remove a directory and everything in it.
    pub recursive: bool,
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/fs/remove",
    tag = FILES,
    summary = "Remove a file or directory",
    params(SandboxId),
    request_body = RemoveBody,
    responses((status = 200, description = "OK: `{path, removed}`", body = Data), E404And422),
)]
pub(super) async fn remove(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RemoveBody>,
) -> ApiResult<impl IntoResponse> {
    let path = one_path("path", body.path)?;
    let guest = state.guest(&caller, &id, true).await?;
    guest.remove(&path, body.recursive).await?;
    Ok(data(json!({ "path": path, "removed": true })))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct RenameBody {
    /// An absolute guest path, without NUL.
    #[schema(value_type = String, required = true, pattern = r"^/[^\u0000]*$", example = "/workspace/a.txt")]
    pub from: Option<String>,
    /// An absolute guest path, without NUL.
    #[schema(value_type = String, required = true, pattern = r"^/[^\u0000]*$", example = "/workspace/b.txt")]
    pub to: Option<String>,
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/fs/rename",
    tag = FILES,
    summary = "Rename a file or directory",
    params(SandboxId),
    request_body = RenameBody,
    responses((status = 200, description = "OK: the entry, with `from` and `to`", body = Data), E404And422),
)]
pub(super) async fn rename(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RenameBody>,
) -> ApiResult<impl IntoResponse> {
    let mut bad = Vec::new();
    let from = body_path("from", body.from, &mut bad);
    let to = body_path("to", body.to, &mut bad);
    if !bad.is_empty() {
        return Err(ApiError::validation(bad));
    }
    let entry = state
        .guest(&caller, &id, true)
        .await?
        .rename(&from, &to)
        .await?;
    let mut v = entry_json(&entry);
    v["from"] = json!(from);
    v["to"] = json!(entry.path);
    Ok(data(v))
}
