//! A template build's log: numbered lines (`system`, `stdout`, `stderr`)
//! kept in memory while the build runs, appended to an NDJSON file as they
//! come (so a finished build's log survives a restart), and followed live
//! by the SSE route.

use parking_lot::Mutex as SyncMutex;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// One line of a build log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub seq: u64,
    pub ts: i64,
    /// `system` (what the builder does), `stdout` or `stderr`.
    pub stream: String,
    pub text: String,
}

/// Lines longer than this are split.
const MAX_LINE: usize = 8 * 1024;

#[derive(Debug, Default)]
struct Inner {
    lines: Vec<LogLine>,
    file: Option<std::fs::File>,
    done: bool,
}

/// The log of one build.
#[derive(Debug)]
pub struct BuildLog {
    path: PathBuf,
    inner: SyncMutex<Inner>,
    /// Bumped on every line and when the log ends.
    changed: watch::Sender<u64>,
}

impl BuildLog {
    /// A new, empty log written to `path`.
    pub fn create(path: &Path) -> std::io::Result<BuildLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::File::create(path)?;
        Ok(BuildLog {
            path: path.to_path_buf(),
            inner: SyncMutex::new(Inner {
                file: Some(file),
                ..Inner::default()
            }),
            changed: watch::channel(0).0,
        })
    }

    /// The finished log stored at `path` (empty when there is none).
    pub fn load(path: &Path) -> BuildLog {
        let lines = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        BuildLog {
            path: path.to_path_buf(),
            inner: SyncMutex::new(Inner {
                lines,
                file: None,
                done: true,
            }),
            changed: watch::channel(0).0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `text` (split into lines) from `stream`.
    pub fn push(&self, ts: i64, stream: &str, text: &str) {
        let mut g = self.inner.lock();
        if g.done {
            return;
        }
        for line in text.lines() {
            let mut rest = line;
            loop {
                let mut cut = rest.len().min(MAX_LINE);
                while !rest.is_char_boundary(cut) {
                    cut -= 1;
                }
                let (head, tail) = rest.split_at(cut);
                let l = LogLine {
                    seq: g.lines.len() as u64,
                    ts,
                    stream: stream.to_string(),
                    text: head.to_string(),
                };
                if let Some(f) = g.file.as_mut() {
                    if let Ok(json) = serde_json::to_string(&l) {
                        // The log is best effort: a full disk fails the
                        // build elsewhere, not here.
                        let _ = writeln!(f, "{json}");
                    }
                }
                g.lines.push(l);
                if tail.is_empty() {
                    break;
                }
                rest = tail;
            }
        }
        let n = g.lines.len() as u64;
        drop(g);
        self.changed.send_replace(n);
    }

    /// Ends the log: followers get what is left, then the end.
    pub fn finish(&self) {
        let mut g = self.inner.lock();
        g.done = true;
        if let Some(f) = g.file.take() {
            let _ = f.sync_all();
        }
        let n = g.lines.len() as u64;
        drop(g);
        self.changed.send_replace(n + 1);
    }

    /// Lines from `from` on, and whether the log has ended.
    pub fn since(&self, from: u64) -> (Vec<LogLine>, bool) {
        let g = self.inner.lock();
        let from = (from as usize).min(g.lines.len());
        (g.lines[from..].to_vec(), g.done)
    }

    /// Every line's text joined (for error messages and tests).
    pub fn tail_text(&self, max_lines: usize) -> String {
        let g = self.inner.lock();
        let skip = g.lines.len().saturating_sub(max_lines);
        g.lines[skip..]
            .iter()
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Notified on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Splits streamed output into whole lines per stream; what is left at the
/// end is flushed as a last line.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: std::collections::HashMap<String, Vec<u8>>,
}

impl LineSplitter {
    /// Feeds a chunk; returns the complete lines it finished.
    pub fn feed(&mut self, stream: &str, data: &[u8]) -> Option<String> {
        let buf = self.partial.entry(stream.to_string()).or_default();
        buf.extend_from_slice(data);
        let end = buf.iter().rposition(|&b| b == b'\n')?;
        let done: Vec<u8> = buf.drain(..=end).collect();
        Some(String::from_utf8_lossy(&done).into_owned())
    }

    /// What is left of every stream.
    pub fn flush(&mut self) -> Vec<(String, String)> {
        self.partial
            .drain()
            .filter(|(_, b)| !b.is_empty())
            .map(|(s, b)| (s, String::from_utf8_lossy(&b).into_owned()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_numbered_persisted_and_reloaded() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("b.log");
        let log = BuildLog::create(&path).expect("create");
        log.push(1, "system", "booting\nbooted");
        log.push(2, "stdout", &"x".repeat(MAX_LINE + 5));
        let (lines, done) = log.since(1);
        assert!(!done);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].text, "booted");
        assert_eq!((lines[2].seq, lines[2].text.len()), (3, 5));
        log.finish();
        log.push(3, "system", "after the end is dropped");
        let again = BuildLog::load(&path);
        let (all, done) = again.since(0);
        assert!(done);
        assert_eq!(all.len(), 4);
        assert_eq!(all[1].stream, "system");
        assert_eq!(again.tail_text(1).len(), 5);
    }

    #[test]
    fn splitter_keeps_partial_lines_per_stream() {
        let mut s = LineSplitter::default();
        assert_eq!(s.feed("stdout", b"hel"), None);
        assert_eq!(s.feed("stderr", b"oops\nha"), Some("oops\n".into()));
        assert_eq!(s.feed("stdout", b"lo\nwor"), Some("hello\n".into()));
        let mut rest = s.flush();
        rest.sort();
        assert_eq!(
            rest,
            vec![
                ("stderr".into(), "ha".into()),
                ("stdout".into(), "wor".into())
            ]
        );
    }
}
