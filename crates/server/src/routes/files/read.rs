//! Reads: downloads, the whole file in JSON, listings, stat, tree, watch
//! (SSE) and tar.gz exports.

use super::*;

/// Streams one guest file as the answer.
pub(super) async fn send_file(guest: &Guest, path: &[u8]) -> ApiResult<Response> {
    let stream = guest.read_file(path).await?;
    Ok(stream_response(
        OCTET_STREAM,
        attachment(base_name(path)),
        Body::from_stream(stream),
    ))
}

#[utoipa::path(
    get,
    path = "/sandboxes/{id}/fs/download",
    tag = FILES,
    summary = "Download a file as raw bytes",
    params(SandboxId, ("path" = String, Query, description = "Absolute guest path.", pattern = r"^/")),
    responses(
        (status = 200, description = "OK", body = RawBytes, content_type = "application/octet-stream"),
        E404And422,
    ),
)]
pub(super) async fn download(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let path = query_path(&Params::parse(query.as_deref()), "path", None)
        .map_err(|e| ApiError::validation(vec![e]))?;
    let guest = state.guest(&caller, &id, false).await?;
    send_file(&guest, &path).await
}

/// `GET /files/{path...}`: the guest path is the rest of the URI.
#[utoipa::path(
    get,
    path = "/sandboxes/{id}/files/{*path}",
    tag = FILES,
    summary = "Read a file as raw bytes (legacy)",
    params(SandboxId, GuestPath),
    responses(
        (status = 200, description = "OK", body = RawBytes, content_type = "application/octet-stream"),
        E404And422,
    ),
)]
pub(super) async fn legacy_read(
    State(state): State<AppState>,
    Auth(caller): Auth,
    uri: Uri,
) -> ApiResult<Response> {
    let (id, path) = legacy_target(uri.path()).ok_or_else(|| ApiError::not_found("route"))?;
    check_path("path", &path).map_err(|e| ApiError::validation(vec![e]))?;
    let guest = state.guest(&caller, &id, false).await?;
    send_file(&guest, &path).await
}

/// The whole file in JSON (base64), refused past the JSON body limit:
/// larger files belong to `fs/download`. The answer is written as the file
/// streams in, never held whole.
#[utoipa::path(
    get,
    path = "/sandboxes/{id}/files/read",
    tag = FILES,
    summary = "Read a file as base64",
    params(SandboxId, ("path" = String, Query, description = "Absolute guest path.", pattern = r"^/")),
    responses((status = 200, description = "OK: `{path, content, encoding, size}`", body = Data), E404And422),
)]
pub(super) async fn read(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let path = query_path(&Params::parse(query.as_deref()), "path", None)
        .map_err(|e| ApiError::validation(vec![e]))?;
    let limit = state.config.max_json_body_bytes;
    let guest = state.guest(&caller, &id, false).await?;
    if guest.stat(&path).await?.size > limit as u64 {
        return Err(too_large(limit).into());
    }
    let file = guest.read_file(&path).await?;
    Ok((
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        Body::from_stream(base64_json(&path, file, limit)),
    )
        .into_response())
}

fn too_large(limit: usize) -> crate::core::error::Error {
    crate::core::error::Error::new(
        crate::core::error::Kind::TooLarge,
        "payload_too_large",
        format!("file exceeds {limit} bytes; use fs/download"),
    )
}

/// `{"data": {"path", "encoding", "content", "size"}}`, the content
/// base64-encoded chunk by chunk as `file` streams in. Eight reads of a
/// 32 MiB file at once held 389 MiB when each answer was built whole. A
/// file that grows past `limit` (or fails) while it is read cuts the
/// answer short: the client sees a broken body, never a wrong one.
fn base64_json(
    path: &[u8],
    file: crate::core::guest::GuestBytes,
    limit: usize,
) -> impl futures_util::Stream<Item = io::Result<bytes::Bytes>> {
    let head = format!(
        r#"{{"data":{{"path":{},"encoding":"base64","content":""#,
        Value::String(String::from_utf8_lossy(path).into_owned())
    );
    struct State {
        head: Option<String>,
        file: crate::core::guest::GuestBytes,
        /// Bytes short of a whole base64 group, for the next chunk.
        carry: Vec<u8>,
        size: usize,
    }
    let start = State {
        head: Some(head),
        file,
        carry: Vec::new(),
        size: 0,
    };
    futures_util::stream::unfold(Some(start), move |st| async move {
        let mut st = st?;
        if let Some(head) = st.head.take() {
            return Some((Ok(bytes::Bytes::from(head)), Some(st)));
        }
        match st.file.next().await {
            Some(Ok(chunk)) => {
                st.size += chunk.len();
                if st.size > limit {
                    let e = io::Error::other(format!("file grew past {limit} bytes while read"));
                    return Some((Err(e), None));
                }
                st.carry.extend_from_slice(&chunk);
                let whole = st.carry.len() / 3 * 3;
                let out = base64::engine::general_purpose::STANDARD.encode(&st.carry[..whole]);
                st.carry.drain(..whole);
                Some((Ok(bytes::Bytes::from(out)), Some(st)))
            }
            Some(Err(e)) => Some((Err(io::Error::other(e.message)), None)),
            None => {
                let tail = format!(
                    r#"{}","size":{}}}}}"#,
                    base64::engine::general_purpose::STANDARD.encode(&st.carry),
                    st.size
                );
                Some((Ok(bytes::Bytes::from(tail)), None))
            }
        }
    })
}

#[utoipa::path(
    get,
    path = "/sandboxes/{id}/files/list",
    tag = FILES,
    summary = "List a directory",
    params(
        SandboxId,
        ("path" = Option<String>, Query, description = "Absolute guest directory (default `/`).", pattern = r"^/"),
        ("depth" = Option<u32>, Query, description = "Levels to list, 1-10 (default 1).", minimum = 1, maximum = 10),
    ),
    responses((status = 200, description = "OK: `{path, entries}`", body = Data), E404And422),
)]
pub(super) async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<impl IntoResponse> {
    let q = Params::parse(query.as_deref());
    let path = query_path(&q, "path", Some("/"));
    let depth = parse_depth(q.get("depth"), DEFAULT_LIST_DEPTH);
    let (path, depth) = both(path, depth)?;
    let r = state
        .guest(&caller, &id, false)
        .await?
        .list(&path, depth)
        .await?;
    let entries: Vec<Value> = r.entries.iter().map(entry_json).collect();
    Ok(data(json!({ "path": r.path, "entries": entries })))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = StatBody)]
#[serde(default)]
pub struct PathBody {
    /// An absolute guest path, without NUL.
    #[schema(value_type = String, required = true, pattern = r"^/[^\u0000]*$", example = "/workspace")]
    pub path: Option<String>,
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/fs/stat",
    tag = FILES,
    summary = "Stat a path",
    params(SandboxId),
    request_body = PathBody,
    responses((status = 200, description = "OK: the entry; a missing path is 404 `file_not_found`", body = Data), E404And422),
)]
pub(super) async fn stat(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PathBody>,
) -> ApiResult<impl IntoResponse> {
    let path = one_path("path", body.path)?;
    let guest = state.guest(&caller, &id, false).await?;
    let entry = guest.stat(path.as_bytes()).await?;
    Ok(data(entry_json(&entry)))
}

#[utoipa::path(
    get,
    path = "/sandboxes/{id}/files/tree",
    tag = FILES,
    summary = "A directory tree",
    params(
        SandboxId,
        ("path" = Option<String>, Query, description = "Absolute guest directory (default `/`).", pattern = r"^/"),
        ("depth" = Option<u32>, Query, description = "Levels, 1-10 (default 3).", minimum = 1, maximum = 10),
    ),
    responses((status = 200, description = "OK: nested `{path, name, type, size, children}`", body = Data), E404And422),
)]
pub(super) async fn tree(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<impl IntoResponse> {
    let q = Params::parse(query.as_deref());
    let path = query_path(&q, "path", Some("/")).and_then(|p| utf8_path("path", p));
    let depth = parse_depth(q.get("depth"), DEFAULT_TREE_DEPTH);
    let (path, depth) = both(path, depth)?;
    let node = state
        .guest(&caller, &id, false)
        .await?
        .tree(&path, depth)
        .await?;
    Ok(data(tree_json(&node)))
}

/// Guest changes as SSE. The agent's watch lives as long as this stream:
/// it ends when the client goes away, even if nothing changes meanwhile.
#[utoipa::path(
    get,
    path = "/sandboxes/{id}/files/watch",
    tag = FILES,
    summary = "Watch a path for changes",
    params(
        SandboxId,
        ("path" = String, Query, description = "Absolute guest path.", pattern = r"^/"),
        ("recursive" = Option<bool>, Query, description = "Watch subdirectories too."),
    ),
    responses(
        (status = 200, description = "Server-sent events `{event, type, path, is_dir, old_path?}`", body = EventStream, content_type = "text/event-stream"),
        E404And422,
    ),
)]
pub(super) async fn watch(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<impl IntoResponse> {
    let q = Params::parse(query.as_deref());
    let path = query_path(&q, "path", None).and_then(|p| utf8_path("path", p));
    let recursive = parse_bool("recursive", q.get("recursive"));
    let (path, recursive) = both(path, recursive)?;
    let guest = state.guest(&caller, &id, false).await?;
    let mut stream = guest.watch(&path, recursive).await?;
    let events = async_stream(&state, &caller, "watch", move |tx| async move {
        let mut view = WatchView::new(&path);
        let mut seq = 0i64;
        loop {
            let item = tokio::select! {
                item = stream.next() => item,
                () = tx.closed() => return,
            };
            let frame = match item {
                None => return,
                Some(Ok(ev)) => match view.translate(ev) {
                    Some(ev) => {
                        seq += 1;
                        watch_frame(seq, &ev)
                    }
                    None => continue,
                },
                Some(Err(e)) => {
                    let err = ApiError::from(e);
                    let f = sse::frame(
                        "error",
                        None,
                        json!({ "code": err.code, "message": err.message }),
                    );
                    let _ = tx.send(Ok(f)).await;
                    return;
                }
            };
            if tx.send(Ok(frame)).await.is_err() {
                return;
            }
        }
    });
    Ok(sse::response(events, sse::heartbeat_of(&state)))
}

/// One file as itself; several (or a directory) as one tar.gz.
#[utoipa::path(
    get,
    path = "/sandboxes/{id}/exports/download",
    tag = FILES,
    summary = "Download one file raw, or several as tar.gz",
    params(
        SandboxId,
        ("path" = Option<String>, Query, description = "One absolute guest path.", pattern = r"^/"),
        ("paths[]" = Option<Vec<String>>, Query, description = "Several absolute guest paths (repeat the parameter; at most 1024)."),
    ),
    responses(
        (status = 200, description = "OK", body = RawBytes, content_type = "application/octet-stream"),
        E404And422,
    ),
)]
pub(super) async fn export(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let q = Params::parse(query.as_deref());
    let paths = q.all(&["path", "paths", "paths[]"]);
    if paths.is_empty() {
        return Err(ApiError::field(
            "paths",
            "name at least one path (path= or paths[]=)",
        ));
    }
    if paths.len() > MAX_EXPORT_PATHS {
        return Err(ApiError::field(
            "paths",
            format!("at most {MAX_EXPORT_PATHS} paths per export"),
        ));
    }
    let bad: Vec<FieldError> = paths
        .iter()
        .enumerate()
        .filter_map(|(i, p)| check_path(&format!("paths[{i}]"), p).err())
        .collect();
    if !bad.is_empty() {
        return Err(ApiError::validation(bad));
    }
    let guest = state.guest(&caller, &id, false).await?;
    if let [one] = paths.as_slice() {
        let entry = guest.stat(one).await?;
        if entry.file_type != FileType::Dir {
            return send_file(&guest, one).await;
        }
    }
    let mut text = Vec::with_capacity(paths.len());
    let mut bad = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        match utf8_path(&format!("paths[{i}]"), p.to_vec()) {
            Ok(s) => text.push(s),
            Err(e) => bad.push(e),
        }
    }
    if !bad.is_empty() {
        return Err(ApiError::validation(bad));
    }
    let stream = guest.archive(&text).await?;
    Ok(stream_response(
        "application/gzip",
        attachment(b"export.tar.gz"),
        Body::from_stream(stream),
    ))
}
