//! `watch`: inotify events under a path as an NDJSON stream of
//! created / modified / deleted / renamed.
//!
//! inotify reports per directory and in pieces (a rename is two events joined
//! by a cookie, one write is several MODIFYs and a CLOSE_WRITE); this module
//! turns that into one event per change a person would name. A watched file
//! is observed through its parent directory, so replacing it atomically (a
//! rename over it) shows up as an event instead of silently ending the watch.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::response::Response;
use axum::routing::get;
use futures_util::StreamExt;
use hearth_agent_protocol::{routes, ErrorCode, WatchEvent, WatchEventKind, WatchQuery};
use inotify::{EventMask, EventOwned, EventStream, Inotify, WatchDescriptor, WatchMask, Watches};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::files::{blocking, display};
use super::{AgentRouter, AgentState};
use crate::error::{HandlerError, HandlerResult};
use crate::extract::{QueryArgs, QueryPath};
use crate::stream::ndjson_response;

/// Bytes of the inotify read buffer (room for hundreds of events per read).
const EVENT_BUFFER: usize = 64 * 1024;
/// Frames queued towards a slow client before the watcher waits for it.
const CHANNEL_DEPTH: usize = 256;
/// How long a MOVED_FROM waits for its MOVED_TO. The kernel queues the pair
/// back to back, so this only matters when a read split them.
const MOVE_PAIR_WAIT: Duration = Duration::from_millis(50);
/// MODIFYs of one path closer together than this are one `modified`.
const MODIFY_COALESCE: Duration = Duration::from_millis(500);
/// Paths remembered as being written; files written and never closed (mmap)
/// must not grow this forever.
const MAX_DIRTY: usize = 10_000;

pub fn routes() -> AgentRouter {
    AgentRouter::new().route(routes::FILES_WATCH, get(watch))
}

async fn watch(
    agent: AgentState,
    QueryPath(path): QueryPath,
    QueryArgs(query): QueryArgs<WatchQuery>,
) -> HandlerResult<Response> {
    let recursive = query.recursive;
    // Watches are in place before the answer goes out, so a client may act
    // on the path as soon as the call returns.
    let (inotify, watcher) = blocking(move || Watcher::start(path, recursive)).await?;
    let stream = inotify
        .into_event_stream(vec![0u8; EVENT_BUFFER])
        .map_err(|e| HandlerError::internal(format!("inotify stream: {e}")))?;
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    tokio::spawn(watcher.run(stream, tx, agent.shutdown.clone()));
    Ok(ndjson_response(rx))
}

fn dir_mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::MODIFY
        | WatchMask::CLOSE_WRITE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::EXCL_UNLINK
        | WatchMask::ONLYDIR
}

/// Maps a failure to add a watch; the kernel's watch limit is ENOSPC.
fn watch_error(err: &io::Error, path: &Path) -> HandlerError {
    match err.raw_os_error() {
        Some(libc::ENOSPC) => HandlerError::new(
            ErrorCode::NoSpace,
            format!("{}: inotify watch limit reached", path.display()),
        ),
        Some(libc::EMFILE) => HandlerError::new(
            ErrorCode::NoSpace,
            "inotify instance limit reached".to_string(),
        ),
        _ => HandlerError::io_op(err, "watch", path),
    }
}

/// A MOVED_FROM waiting for the MOVED_TO with the same cookie.
#[derive(Debug)]
struct PendingMove {
    cookie: u32,
    path: PathBuf,
    is_dir: bool,
    since: Instant,
}

/// State of one watch stream.
#[derive(Debug)]
struct Watcher {
    /// What the client asked to watch.
    root: PathBuf,
    root_is_dir: bool,
    recursive: bool,
    watches: Watches,
    /// Watched directories by watch descriptor id.
    dirs: HashMap<i32, (WatchDescriptor, PathBuf)>,
    /// Descriptor of the root directory (the parent, when watching a file).
    root_wd: i32,
    pending_move: Option<PendingMove>,
    /// Paths with a `modified` already sent for the write in progress.
    dirty: HashMap<PathBuf, Instant>,
    /// The watched root is gone; the stream ends.
    finished: bool,
}

impl Watcher {
    /// Sets up inotify and the initial watches (blocking: walks the tree).
    fn start(root: PathBuf, recursive: bool) -> HandlerResult<(Inotify, Watcher)> {
        let meta = std::fs::metadata(&root).map_err(|e| HandlerError::io(&e, &root))?;
        let inotify = Inotify::init().map_err(|e| watch_error(&e, &root))?;
        let root_is_dir = meta.is_dir();
        let watch_dir = if root_is_dir {
            root.clone()
        } else {
            root.parent()
                .map(Path::to_path_buf)
                .ok_or_else(|| HandlerError::bad_request("cannot watch a file without a parent"))?
        };
        let mut watches = inotify.watches();
        let wd = watches
            .add(&watch_dir, dir_mask())
            .map_err(|e| watch_error(&e, &watch_dir))?;
        let root_wd = wd.get_watch_descriptor_id();
        let mut w = Watcher {
            root,
            root_is_dir,
            recursive: recursive && root_is_dir,
            watches,
            dirs: HashMap::from([(root_wd, (wd, watch_dir.clone()))]),
            root_wd,
            pending_move: None,
            dirty: HashMap::new(),
            finished: false,
        };
        if w.recursive {
            let found = add_tree(&mut w.watches, &watch_dir, false);
            if let Some((path, e)) = found.error {
                return Err(watch_error(&e, &path));
            }
            w.dirs.extend(found.added);
        }
        Ok((inotify, w))
    }

    async fn run(
        mut self,
        mut stream: EventStream<Vec<u8>>,
        tx: mpsc::Sender<WatchEvent>,
        shutdown: CancellationToken,
    ) {
        tracing::debug!(root = %self.root.display(), recursive = self.recursive, "watch started");
        loop {
            let flush_at = self.pending_move.as_ref().map(|p| p.since + MOVE_PAIR_WAIT);
            // Biased: an event already queued (the MOVED_TO of a pending
            // MOVED_FROM) is read before the pair's timer may give up on
            // it. Unbiased, a task scheduled late found both ready and
            // sometimes took the timer: a rename came out as delete+create.
            let next = tokio::select! {
                biased;
                _ = tx.closed() => break,
                _ = shutdown.cancelled() => break,
                ev = stream.next() => ev,
                _ = sleep_until(flush_at) => {
                    let out = self.pending_move.take().map(|p| self.moved_away(p)).unwrap_or_default();
                    if !self.send_all(&tx, out).await {
                        break;
                    }
                    continue;
                }
            };
            match next {
                Some(Ok(ev)) => {
                    let out = self.handle(ev).await;
                    if !self.send_all(&tx, out).await || self.finished {
                        break;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(root = %self.root.display(), error = %e, "inotify read failed");
                    break;
                }
                None => break,
            }
        }
        tracing::debug!(root = %self.root.display(), "watch ended");
    }

    /// Sends the events the client should see; false once the client is gone.
    async fn send_all(&self, tx: &mpsc::Sender<WatchEvent>, events: Vec<WatchEvent>) -> bool {
        for ev in events {
            if !self.wanted(&ev) {
                continue;
            }
            if tx.send(ev).await.is_err() {
                return false;
            }
        }
        true
    }

    /// When watching a file, only its own events pass.
    fn wanted(&self, ev: &WatchEvent) -> bool {
        if self.root_is_dir {
            return true;
        }
        let root = display(&self.root);
        ev.path == root || ev.old_path.as_deref() == Some(root.as_str())
    }

    fn path_of(&self, ev: &EventOwned) -> Option<PathBuf> {
        let (_, base) = self.dirs.get(&ev.wd.get_watch_descriptor_id())?;
        Some(match &ev.name {
            Some(name) => base.join(name),
            None => base.clone(),
        })
    }

    async fn handle(&mut self, ev: EventOwned) -> Vec<WatchEvent> {
        let mut out = Vec::new();
        let mask = ev.mask;
        if mask.contains(EventMask::Q_OVERFLOW) {
            tracing::warn!(root = %self.root.display(), "inotify queue overflowed; events lost");
            return out;
        }
        let wd = ev.wd.get_watch_descriptor_id();
        let is_dir = mask.contains(EventMask::ISDIR);
        let path = self.path_of(&ev);

        // The kernel queues MOVED_TO right after its MOVED_FROM; anything
        // else in between means the thing left the watched tree.
        if let Some(pending) = self.pending_move.take() {
            match &path {
                Some(to) if mask.contains(EventMask::MOVED_TO) && ev.cookie == pending.cookie => {
                    self.dirty.remove(&pending.path);
                    if pending.is_dir {
                        self.rebase(&pending.path, to);
                    }
                    out.push(event(
                        WatchEventKind::Renamed,
                        to,
                        pending.is_dir,
                        Some(&pending.path),
                    ));
                    return out;
                }
                _ => out.extend(self.moved_away(pending)),
            }
        }

        if mask.contains(EventMask::IGNORED) {
            self.dirs.remove(&wd);
            if wd == self.root_wd {
                self.finished = true;
            }
            return out;
        }
        let Some(path) = path else {
            // A watch already dropped from the map: nothing left to name.
            return out;
        };

        if mask.contains(EventMask::CREATE) {
            out.push(event(WatchEventKind::Created, &path, is_dir, None));
            if is_dir && self.recursive {
                // Whatever was created inside before the watch landed would
                // otherwise never be reported.
                out.extend(self.watch_new_dir(&path, true).await);
            }
        } else if mask.contains(EventMask::MODIFY) {
            if self.modify_is_news(&path) {
                out.push(event(WatchEventKind::Modified, &path, is_dir, None));
            }
        } else if mask.contains(EventMask::CLOSE_WRITE) {
            if self.dirty.remove(&path).is_none() {
                out.push(event(WatchEventKind::Modified, &path, is_dir, None));
            }
        } else if mask.contains(EventMask::DELETE) {
            self.dirty.remove(&path);
            out.push(event(WatchEventKind::Deleted, &path, is_dir, None));
        } else if mask.contains(EventMask::MOVED_FROM) {
            self.pending_move = Some(PendingMove {
                cookie: ev.cookie,
                path,
                is_dir,
                since: Instant::now(),
            });
        } else if mask.contains(EventMask::MOVED_TO) {
            out.push(event(WatchEventKind::Created, &path, is_dir, None));
            if is_dir && self.recursive {
                out.extend(self.watch_new_dir(&path, false).await);
            }
        } else if mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF)
            && wd == self.root_wd
            && self.root_is_dir
        {
            // Subdirectories are reported by their parent's DELETE/MOVED_*;
            // only the root has no parent watched.
            out.push(event(WatchEventKind::Deleted, &self.root, true, None));
            self.finished = true;
        }
        out
    }

    /// A MOVED_FROM without its MOVED_TO: the thing left the watched tree.
    fn moved_away(&mut self, pending: PendingMove) -> Vec<WatchEvent> {
        self.dirty.remove(&pending.path);
        if pending.is_dir {
            let gone: Vec<i32> = self
                .dirs
                .iter()
                .filter(|(_, (_, p))| p.starts_with(&pending.path))
                .map(|(id, _)| *id)
                .collect();
            for id in gone {
                if let Some((wd, _)) = self.dirs.remove(&id) {
                    let _ = self.watches.remove(wd);
                }
            }
        }
        vec![event(
            WatchEventKind::Deleted,
            &pending.path,
            pending.is_dir,
            None,
        )]
    }

    /// Renames the watched directories under `from` to live under `to`.
    fn rebase(&mut self, from: &Path, to: &Path) {
        for (_, p) in self.dirs.values_mut() {
            if let Ok(rest) = p.strip_prefix(from) {
                *p = if rest.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rest)
                };
            }
        }
    }

    /// Watches a directory that appeared under a recursive watch, off the
    /// runtime threads. With `report`, its contents are reported as created.
    async fn watch_new_dir(&mut self, dir: &Path, report: bool) -> Vec<WatchEvent> {
        let mut watches = self.watches.clone();
        let dir = dir.to_path_buf();
        let found = tokio::task::spawn_blocking(move || {
            let mut found = add_tree(&mut watches, &dir, report);
            if let Some((path, e)) = found.error.take() {
                tracing::warn!(path = %path.display(), error = %e, "could not watch new directory");
            }
            found
        })
        .await;
        match found {
            Ok(found) => {
                self.dirs.extend(found.added);
                found.created
            }
            Err(e) => {
                tracing::warn!(error = %e, "watch task failed");
                Vec::new()
            }
        }
    }

    fn modify_is_news(&mut self, path: &Path) -> bool {
        let now = Instant::now();
        if let Some(last) = self.dirty.get(path) {
            if now.duration_since(*last) < MODIFY_COALESCE {
                return false;
            }
        }
        if self.dirty.len() >= MAX_DIRTY {
            self.dirty.clear();
        }
        self.dirty.insert(path.to_path_buf(), now);
        true
    }
}

/// What walking a new directory tree found.
#[derive(Debug, Default)]
struct Found {
    added: Vec<(i32, (WatchDescriptor, PathBuf))>,
    created: Vec<WatchEvent>,
    /// The first failure to add a watch (other than the directory vanishing).
    error: Option<(PathBuf, io::Error)>,
}

/// Watches `dir` and every directory below it (symlinks are not followed).
/// With `report`, every entry found below `dir` becomes a `created` event.
fn add_tree(watches: &mut Watches, dir: &Path, report: bool) -> Found {
    let mut found = Found::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        match watches.add(&d, dir_mask() | WatchMask::DONT_FOLLOW) {
            Ok(wd) => found
                .added
                .push((wd.get_watch_descriptor_id(), (wd, d.clone()))),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                continue
            }
            Err(e) => {
                found.error.get_or_insert((d.clone(), e));
                continue;
            }
        }
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            let path = entry.path();
            if report {
                found
                    .created
                    .push(event(WatchEventKind::Created, &path, ft.is_dir(), None));
            }
            if ft.is_dir() {
                stack.push(path);
            }
        }
    }
    found
}

fn event(kind: WatchEventKind, path: &Path, is_dir: bool, old_path: Option<&Path>) -> WatchEvent {
    WatchEvent {
        event: kind,
        path: display(path),
        is_dir,
        old_path: old_path.map(display),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebase_moves_nested_watch_paths() {
        let dir = tempfile::tempdir().unwrap();
        let (_inotify, mut w) = Watcher::start(dir.path().to_path_buf(), true).unwrap();
        let root_wd = w.dirs[&w.root_wd].0.clone();
        w.dirs.insert(9999, (root_wd, dir.path().join("a/b")));
        w.rebase(&dir.path().join("a"), &dir.path().join("c"));
        assert_eq!(w.dirs[&9999].1, dir.path().join("c/b"));
        assert_eq!(w.dirs[&w.root_wd].1, dir.path());
    }

    #[test]
    fn modifies_close_together_coalesce() {
        let dir = tempfile::tempdir().unwrap();
        let (_inotify, mut w) = Watcher::start(dir.path().to_path_buf(), false).unwrap();
        let p = dir.path().join("f");
        assert!(w.modify_is_news(&p));
        assert!(!w.modify_is_news(&p));
        assert!(w.modify_is_news(&dir.path().join("g")));
    }
}
