//! `filesystem.Filesystem` on the guest agent's file operations: `Stat`,
//! `MakeDir`, `Move`, `ListDir` (with depth), `Remove`, `WatchDir` (a
//! stream), and the polled watchers the synchronous SDK uses
//! (`CreateWatcher`, `GetWatcherEvents`, `RemoveWatcher`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::StreamExt;
use hearth_agent_protocol::{FileEntry, FileType as AgentType, WatchEvent, WatchEventKind};
use hearth_e2b_proto::filesystem::{
    watch_dir_response, CreateWatcherRequest, CreateWatcherResponse, EntryInfo, EventType,
    FileType, FilesystemEvent, GetWatcherEventsRequest, GetWatcherEventsResponse, ListDirRequest,
    ListDirResponse, MakeDirRequest, MakeDirResponse, MoveRequest, MoveResponse, RemoveRequest,
    RemoveResponse, RemoveWatcherRequest, RemoveWatcherResponse, StatRequest, StatResponse,
    WatchDirRequest, WatchDirResponse,
};
use parking_lot::Mutex;

use super::connect::{Call, Code, RpcError};
use super::process::unary;
use super::Envd;
use crate::core::ids::new_id;

/// Events one polled watcher keeps until read (the oldest go first).
const MAX_BUFFERED: usize = 10_000;
/// Polled watchers one server keeps at most.
const MAX_WATCHERS: usize = 1_000;

/// Watchers created with `CreateWatcher`: their events so far, by id.
#[derive(Debug, Default)]
pub struct Watchers(Mutex<HashMap<String, Watcher>>);

#[derive(Debug)]
struct Watcher {
    sandbox_id: String,
    events: Arc<Mutex<Vec<FilesystemEvent>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn entry(e: &FileEntry) -> EntryInfo {
    let kind = match e.file_type {
        AgentType::File => FileType::File,
        AgentType::Dir => FileType::Directory,
        AgentType::Symlink => FileType::Symlink,
        AgentType::Other => FileType::Unspecified,
    };
    EntryInfo {
        name: e.name.clone(),
        r#type: kind as i32,
        path: e.path.clone(),
        size: i64::try_from(e.size).unwrap_or(i64::MAX),
        mode: e.mode,
        permissions: permissions(e.mode, kind),
        owner: String::new(),
        group: String::new(),
        modified_time: Some(hearth_e2b_proto::pbjson_types::Timestamp {
            seconds: e.modified_at_ms.div_euclid(1000),
            nanos: i32::try_from(e.modified_at_ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
        }),
        symlink_target: e.symlink_target.clone(),
        is_symlink: e.file_type == AgentType::Symlink,
        ..Default::default()
    }
}

/// `ls -l`'s permission string (`drwxr-xr-x`).
fn permissions(mode: u32, kind: FileType) -> String {
    let t = match kind {
        FileType::Directory => 'd',
        FileType::Symlink => 'l',
        _ => '-',
    };
    let mut s = String::from(t);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn fs_event(w: &WatchEvent, base: &str) -> FilesystemEvent {
    let kind = match w.event {
        WatchEventKind::Created => EventType::Create,
        WatchEventKind::Modified => EventType::Write,
        WatchEventKind::Deleted => EventType::Remove,
        WatchEventKind::Renamed => EventType::Rename,
    };
    let name = w
        .path
        .strip_prefix(base)
        .unwrap_or(&w.path)
        .trim_start_matches('/')
        .to_string();
    FilesystemEvent {
        name,
        r#type: kind as i32,
        entry: None,
    }
}

pub async fn stat(envd: Envd, headers: HeaderMap, body: Bytes) -> Response {
    unary(&headers, &body, move |req: StatRequest| async move {
        let guest = envd.guest(false).await?;
        let e = guest.stat(envd.absolute(&req.path).as_bytes()).await?;
        Ok(StatResponse {
            entry: Some(entry(&e)),
        })
    })
    .await
}

pub async fn make_dir(envd: Envd, headers: HeaderMap, body: Bytes) -> Response {
    unary(&headers, &body, move |req: MakeDirRequest| async move {
        let guest = envd.guest(true).await?;
        let path = envd.absolute(&req.path);
        if guest.stat(path.as_bytes()).await.is_ok() {
            return Err(RpcError::new(
                Code::AlreadyExists,
                format!("{path} already exists"),
            ));
        }
        let e = guest.mkdir(&path, None).await?;
        Ok(MakeDirResponse {
            entry: Some(entry(&e)),
        })
    })
    .await
}

pub async fn rename(envd: Envd, headers: HeaderMap, body: Bytes) -> Response {
    unary(&headers, &body, move |req: MoveRequest| async move {
        let guest = envd.guest(true).await?;
        let e = guest
            .rename(
                &envd.absolute(&req.source),
                &envd.absolute(&req.destination),
            )
            .await?;
        Ok(MoveResponse {
            entry: Some(entry(&e)),
        })
    })
    .await
}

pub async fn list_dir(envd: Envd, headers: HeaderMap, body: Bytes) -> Response {
    unary(&headers, &body, move |req: ListDirRequest| async move {
        let guest = envd.guest(false).await?;
        let depth = req.depth.clamp(1, 32);
        let list = guest
            .list(envd.absolute(&req.path).as_bytes(), depth)
            .await?;
        Ok(ListDirResponse {
            entries: list.entries.iter().map(entry).collect(),
        })
    })
    .await
}

pub async fn remove(envd: Envd, headers: HeaderMap, body: Bytes) -> Response {
    unary(&headers, &body, move |req: RemoveRequest| async move {
        let guest = envd.guest(true).await?;
        guest.remove(&envd.absolute(&req.path), true).await?;
        Ok(RemoveResponse {})
    })
    .await
}

pub async fn watch_dir(envd: Envd, headers: HeaderMap, body: Bytes) -> Response {
    let call = match Call::of(&headers) {
        Ok(c) => c,
        Err(e) => return Call::unsupported(e),
    };
    let run = async {
        let req: WatchDirRequest = call.request(&body)?;
        let path = envd.absolute(&req.path);
        let guest = envd.guest(false).await?;
        let frames = guest.watch(&path, req.recursive).await?;
        let start = WatchDirResponse {
            event: Some(watch_dir_response::Event::Start(Default::default())),
        };
        let events =
            futures_util::stream::unfold((frames, path), |(mut frames, base)| async move {
                let ev = match frames.next().await? {
                    Ok(w) => Ok(WatchDirResponse {
                        event: Some(watch_dir_response::Event::Filesystem(fs_event(&w, &base))),
                    }),
                    Err(e) => Err(RpcError::from(e)),
                };
                Some((ev, (frames, base)))
            });
        let stream = futures_util::stream::once(async move { Ok(start) }).chain(events);
        Ok::<_, RpcError>(call.stream(stream))
    };
    run.await.unwrap_or_else(|e| call.fail(e))
}

pub async fn create_watcher(envd: Envd, headers: HeaderMap, body: Bytes) -> Response {
    unary(
        &headers,
        &body,
        move |req: CreateWatcherRequest| async move {
            let path = envd.absolute(&req.path);
            let guest = envd.guest(false).await?;
            let mut frames = guest.watch(&path, req.recursive).await?;
            let events: Arc<Mutex<Vec<FilesystemEvent>>> = Arc::default();
            let sink = events.clone();
            let task = tokio::spawn(async move {
                while let Some(Ok(w)) = frames.next().await {
                    let mut buf = sink.lock();
                    if buf.len() >= MAX_BUFFERED {
                        buf.remove(0);
                    }
                    buf.push(fs_event(&w, &path));
                }
            });
            let id = new_id("w");
            let mut all = envd.state.watchers.0.lock();
            if all.len() >= MAX_WATCHERS {
                return Err(RpcError::new(
                    Code::ResourceExhausted,
                    format!("at most {MAX_WATCHERS} watchers"),
                ));
            }
            all.insert(
                id.clone(),
                Watcher {
                    sandbox_id: envd.sandbox_id.clone(),
                    events,
                    task,
                },
            );
            Ok(CreateWatcherResponse { watcher_id: id })
        },
    )
    .await
}

/// The events of a watcher of this sandbox.
fn watcher_events(envd: &Envd, id: &str) -> Result<Arc<Mutex<Vec<FilesystemEvent>>>, RpcError> {
    envd.state
        .watchers
        .0
        .lock()
        .get(id)
        .filter(|w| w.sandbox_id == envd.sandbox_id)
        .map(|w| w.events.clone())
        .ok_or_else(|| RpcError::new(Code::NotFound, format!("watcher {id} not found")))
}

pub async fn get_watcher_events(envd: Envd, headers: HeaderMap, body: Bytes) -> Response {
    unary(
        &headers,
        &body,
        move |req: GetWatcherEventsRequest| async move {
            let events = watcher_events(&envd, &req.watcher_id)?;
            let events = std::mem::take(&mut *events.lock());
            Ok(GetWatcherEventsResponse { events })
        },
    )
    .await
}

pub async fn remove_watcher(envd: Envd, headers: HeaderMap, body: Bytes) -> Response {
    unary(
        &headers,
        &body,
        move |req: RemoveWatcherRequest| async move {
            watcher_events(&envd, &req.watcher_id)?;
            envd.state.watchers.0.lock().remove(&req.watcher_id);
            Ok(RemoveWatcherResponse {})
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_strings_read_like_ls() {
        assert_eq!(permissions(0o755, FileType::Directory), "drwxr-xr-x");
        assert_eq!(permissions(0o640, FileType::File), "-rw-r-----");
    }
}
