//! Background processes: start, list, get, kill, signal, stdin, logs and
//! the output stream (SSE, resumable by sequence number).

use super::*;

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/processes",
    tag = PROC,
    summary = "Start a background process",
    params(SandboxId),
    request_body = StartBody,
    responses((status = 201, description = "Created: the process", body = Data), E404And422),
)]
pub(super) async fn start(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(mut body): ApiJson<StartBody>,
) -> ApiResult<impl IntoResponse> {
    let secrets = super::super::secrets::call_secrets(std::mem::take(&mut body.secrets))?;
    let req = body.validate()?;
    let guest = state.guest(&caller, &id, true).await?.with_secrets(secrets);
    let note = super::super::exec::command_note(&guest, &req.command).await?;
    let p = guest.process_start(&req).await?;
    tracing::debug!(sandbox_id = %id, pid = p.pid, "process started");
    let note = note.detail("pid", p.pid);
    Ok((
        StatusCode::CREATED,
        axum::Extension(note),
        data(process_json(&p)),
    ))
}

#[utoipa::path(
    get,
    path = "/sandboxes/{id}/processes",
    tag = PROC,
    summary = "List processes",
    params(SandboxId, PageQuery),
    responses((status = 200, description = "OK", body = DataPage), E404And422),
)]
pub(super) async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    let pg = parse_page(q.page.as_deref(), q.page_size.as_deref())?;
    let mut procs = state
        .guest(&caller, &id, false)
        .await?
        .process_list()
        .await?;
    procs.sort_by_key(|p| (p.started_at_ms, p.pid));
    let total = procs.len() as u64;
    let skip = (pg.page as usize - 1).saturating_mul(pg.page_size as usize);
    let items: Vec<Value> = procs
        .iter()
        .skip(skip)
        .take(pg.page_size as usize)
        .map(process_json)
        .collect();
    Ok(page(items, pg.page, pg.page_size, total))
}

#[utoipa::path(
    get,
    path = "/sandboxes/{id}/processes/{pid}",
    tag = PROC,
    summary = "Get a process",
    params(SandboxId, ProcessId),
    responses((status = 200, description = "OK", body = Data), E404),
)]
pub(super) async fn get_one(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, pid)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let pid = parse_pid(&pid)?;
    let p = state
        .guest(&caller, &id, false)
        .await?
        .process_get(pid)
        .await?;
    Ok(data(process_json(&p)))
}

#[utoipa::path(
    delete,
    path = "/sandboxes/{id}/processes/{pid}",
    tag = PROC,
    summary = "Kill a process (SIGTERM, then SIGKILL after 5 s)",
    params(SandboxId, ProcessId),
    responses((status = 200, description = "OK", body = Data), E404),
)]
pub(super) async fn kill(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, pid)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let pid = parse_pid(&pid)?;
    let guest = state.guest(&caller, &id, true).await?;
    let p = guest
        .process_kill(pid, hearth_agent_protocol::DEFAULT_KILL_GRACE_MS)
        .await?;
    Ok(data(process_json(&p)))
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/processes/{pid}/signal",
    tag = PROC,
    summary = "Send a signal to a process",
    params(SandboxId, ProcessId),
    request_body = SignalBody,
    responses((status = 200, description = "OK", body = Data), E404And422),
)]
pub(super) async fn signal(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, pid)): Path<(String, String)>,
    ApiJson(body): ApiJson<SignalBody>,
) -> ApiResult<impl IntoResponse> {
    let pid = parse_pid(&pid)?;
    let sig = parse_signal(body.signal.as_ref())?;
    let guest = state.guest(&caller, &id, true).await?;
    let p = guest.process_signal(pid, &sig).await?;
    Ok(data(process_json(&p)))
}

#[utoipa::path(
    post,
    path = "/sandboxes/{id}/processes/{pid}/stdin",
    tag = PROC,
    summary = "Write to a process's stdin",
    params(SandboxId, ProcessId),
    request_body = StdinBody,
    responses((status = 200, description = "OK", body = Data), E404And422),
)]
pub(super) async fn stdin(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, pid)): Path<(String, String)>,
    ApiJson(body): ApiJson<StdinBody>,
) -> ApiResult<impl IntoResponse> {
    let pid = parse_pid(&pid)?;
    let req = body.validate()?;
    let guest = state.guest(&caller, &id, true).await?;
    let p = guest.process_stdin(pid, &req).await?;
    Ok(data(process_json(&p)))
}

#[utoipa::path(
    get,
    path = "/sandboxes/{id}/processes/{pid}/logs",
    tag = PROC,
    summary = "Buffered output of a process",
    params(SandboxId, ProcessId, LogsQuery),
    responses((status = 200, description = "OK: `{stdout, stderr, dropped_bytes, truncated}`", body = Data), E404And422),
)]
pub(super) async fn logs(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, pid)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> ApiResult<impl IntoResponse> {
    let pid = parse_pid(&pid)?;
    let tail = parse_tail(q.tail.as_deref())?;
    let l = state
        .guest(&caller, &id, false)
        .await?
        .process_logs(pid)
        .await?;
    Ok(data(json!({
        "stdout": text(tail_lines(l.stdout.as_slice(), tail)),
        "stderr": text(tail_lines(l.stderr.as_slice(), tail)),
        "dropped_bytes": l.dropped_bytes,
        "truncated": l.dropped_bytes > 0,
    })))
}

#[utoipa::path(
    get,
    path = "/sandboxes/{id}/processes/{pid}/stream",
    tag = PROC,
    summary = "Stream a process's output, buffered output first",
    params(SandboxId, ProcessId, StreamQuery, LastEventId),
    responses(
        (status = 200, description = "Server-sent events, as `exec/stream`", body = EventStream, content_type = "text/event-stream"),
        E404And422,
    ),
)]
pub(super) async fn stream(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, pid)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<StreamQuery>,
    headers: http::HeaderMap,
) -> ApiResult<impl IntoResponse> {
    let pid = parse_pid(&pid)?;
    let from = resume_seq(sse::last_event_id(&headers), q.from_seq.as_deref())?;
    let guest = state.guest(&caller, &id, false).await?;
    let mut output = guest.process_output(pid, from).await?;
    let events = async_stream(&state, &caller, "process", move |tx| async move {
        forward_output(&mut output, &tx).await;
    });
    Ok(sse::response(events, sse::heartbeat_of(&state)))
}
