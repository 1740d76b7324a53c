//! A template build's log: numbered lines (`system`, `stdout`, `stderr`)
//! kept in memory while the build runs, appended to an NDJSON file (so a
//! finished build's log survives a restart), and followed live by the SSE
//! route.
//!
//! A build prints what it likes, so both copies are bounded and keep the
//! tail, where a failing build's error is: memory holds the newest lines
//! within [`LogLimits`], and the file is two parts of at most half
//! `max_bytes` each (when the newer part is full it replaces the older
//! one). A reader who asks for lines that are gone gets one `system` line
//! in their place saying how many were dropped; one who keeps up with a
//! running build sees every line.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex as SyncMutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::BuildsConfig;

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
pub const MAX_LINE: usize = 8 * 1024;

/// Most lines one [`BuildLog::since`] call hands out, so a reader's copy
/// is bounded too; it asks again for the rest.
pub const PAGE_LINES: usize = 256;

/// What a kept line costs in memory besides its text (the record, the
/// stream name, the queue slot), counted against `max_bytes` so that a
/// flood of empty lines is bounded like a flood of long ones.
const LINE_OVERHEAD: usize = 96;

/// How much of one build's log is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Bytes kept in memory (text plus a per-line overhead), and on disk
    /// (both parts of the file together).
    pub max_bytes: u64,
    /// Lines kept in memory.
    pub max_lines: usize,
}

impl From<&BuildsConfig> for LogLimits {
    fn from(c: &BuildsConfig) -> Self {
        LogLimits {
            max_bytes: c.log_max_bytes,
            max_lines: c.log_max_lines,
        }
    }
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits::from(&BuildsConfig::default())
    }
}

/// The newest lines, within the limits.
#[derive(Debug, Default)]
struct Ring {
    lines: VecDeque<LogLine>,
    /// What `lines` costs, as [`LINE_OVERHEAD`] counts it.
    bytes: usize,
    /// The number the next line gets.
    next_seq: u64,
}

fn cost(l: &LogLine) -> usize {
    l.text.len() + l.stream.len() + LINE_OVERHEAD
}

impl Ring {
    /// The oldest line still held (`next_seq` when none is).
    fn first_seq(&self) -> u64 {
        self.lines.front().map_or(self.next_seq, |l| l.seq)
    }

    /// Adds `l` and drops the oldest lines past the limits (the newest is
    /// always kept).
    fn push(&mut self, l: LogLine, limits: &LogLimits) {
        self.next_seq = l.seq + 1;
        self.bytes += cost(&l);
        self.lines.push_back(l);
        let max_bytes = usize::try_from(limits.max_bytes).unwrap_or(usize::MAX);
        while self.lines.len() > 1
            && (self.bytes > max_bytes || self.lines.len() > limits.max_lines)
        {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= cost(&old);
            }
        }
    }

    /// At most `max` lines from `from` on; when lines from `from` were
    /// dropped, a `system` line saying how many comes first, numbered as the
    /// last dropped line (so resuming after it resumes after the gap).
    fn page(&self, from: u64, max: usize) -> Vec<LogLine> {
        let first = self.first_seq();
        let mut out = Vec::new();
        if from < first {
            let ts = self.lines.front().map_or(0, |l| l.ts);
            out.push(LogLine {
                seq: first - 1,
                ts,
                stream: "system".into(),
                text: format!("... {} earlier lines dropped ...", first - from),
            });
        }
        let skip = usize::try_from(from.saturating_sub(first))
            .unwrap_or(usize::MAX)
            .min(self.lines.len());
        let room = max.saturating_sub(out.len());
        out.extend(self.lines.range(skip..).take(room).cloned());
        out
    }
}

/// The file a running build's lines go to, in two parts: `<path>` and the
/// older `<path>.1`.
#[derive(Debug)]
struct Disk {
    path: PathBuf,
    file: Option<BufWriter<File>>,
    /// Bytes in the newer part.
    part_bytes: u64,
    /// The first line not written yet.
    written: u64,
    /// Whether lines go to disk as they come (from [`BuildLog::start`]).
    active: bool,
    /// Whether the first part was made (a log starts from nothing).
    begun: bool,
}

fn older_part(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_os_string();
    p.push(".1");
    PathBuf::from(p)
}

impl Disk {
    /// Writes the ring's lines not written yet (into the buffer: see
    /// [`Disk::flush`]). Best effort: a full disk fails the build
    /// elsewhere, not here.
    fn write_pending(&mut self, ring: &Ring, limits: &LogLimits) {
        let part_limit = (limits.max_bytes / 2).max(1);
        let skip = usize::try_from(self.written.saturating_sub(ring.first_seq()))
            .unwrap_or(usize::MAX)
            .min(ring.lines.len());
        for l in ring.lines.range(skip..) {
            self.written = l.seq + 1;
            let Ok(mut json) = serde_json::to_string(l) else {
                continue;
            };
            json.push('\n');
            let len = json.len() as u64;
            if self.file.is_none() || (self.part_bytes > 0 && self.part_bytes + len > part_limit) {
                self.rotate();
            }
            if let Some(f) = self.file.as_mut() {
                if f.write_all(json.as_bytes()).is_ok() {
                    self.part_bytes += len;
                }
            }
        }
    }

    fn flush(&mut self) {
        if let Some(f) = self.file.as_mut() {
            let _ = f.flush();
        }
    }

    /// Starts a new part: the current one (if any) becomes the older one.
    fn rotate(&mut self) {
        if let Some(mut f) = self.file.take() {
            let _ = f.flush();
            let _ = std::fs::rename(&self.path, older_part(&self.path));
        } else if !self.begun {
            // Nothing of an earlier log with this path may stay.
            let _ = std::fs::remove_file(older_part(&self.path));
        }
        self.begun = true;
        self.part_bytes = 0;
        self.file = File::create(&self.path).ok().map(BufWriter::new);
    }
}

#[derive(Debug)]
struct Inner {
    ring: Ring,
    disk: Option<Disk>,
    done: bool,
}

/// The log of one build.
#[derive(Debug)]
pub struct BuildLog {
    path: PathBuf,
    limits: LogLimits,
    inner: SyncMutex<Inner>,
    /// Bumped on every line and when the log ends.
    changed: watch::Sender<u64>,
}

/// Lines handed to a reader, and whether the log ended with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPage {
    pub lines: Vec<LogLine>,
    /// The log has ended and nothing follows these lines.
    pub done: bool,
}

impl BuildLog {
    /// A new, empty log to be written to `path` (and `<path>.1`). Nothing
    /// is written until [`BuildLog::start`] or [`BuildLog::finish`], so a
    /// queued build holds no open file.
    pub fn create(path: &Path, limits: LogLimits) -> std::io::Result<BuildLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Ok(BuildLog {
            path: path.to_path_buf(),
            limits,
            inner: SyncMutex::new(Inner {
                ring: Ring::default(),
                disk: Some(Disk {
                    path: path.to_path_buf(),
                    file: None,
                    part_bytes: 0,
                    written: 0,
                    active: false,
                    begun: false,
                }),
                done: false,
            }),
            changed: watch::channel(0).0,
        })
    }

    /// The finished log stored at `path` (empty when there is none): its
    /// newest lines within `limits`, read a line at a time.
    pub fn load(path: &Path, limits: LogLimits) -> BuildLog {
        let mut ring = Ring::default();
        for part in [older_part(path), path.to_path_buf()] {
            let Ok(f) = File::open(&part) else { continue };
            for line in BufReader::new(f).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<LogLine>(&line) {
                    Ok(l) if l.seq >= ring.next_seq => ring.push(l, &limits),
                    _ => {}
                }
            }
        }
        BuildLog {
            path: path.to_path_buf(),
            limits,
            inner: SyncMutex::new(Inner {
                ring,
                disk: None,
                done: true,
            }),
            changed: watch::channel(0).0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The build runs: lines so far go to disk, and later ones as they come.
    pub fn start(&self) {
        let mut g = self.inner.lock();
        let Inner { ring, disk, .. } = &mut *g;
        if let Some(d) = disk.as_mut() {
            d.active = true;
            d.write_pending(ring, &self.limits);
            d.flush();
        }
    }

    /// Appends `text` (split into lines) from `stream`.
    pub fn push(&self, ts: i64, stream: &str, text: &str) {
        let mut g = self.inner.lock();
        if g.done {
            return;
        }
        let Inner { ring, disk, .. } = &mut *g;
        for line in text.lines() {
            let mut rest = line;
            loop {
                let mut cut = rest.len().min(MAX_LINE);
                while !rest.is_char_boundary(cut) {
                    cut -= 1;
                }
                let (head, tail) = rest.split_at(cut);
                let l = LogLine {
                    seq: ring.next_seq,
                    ts,
                    stream: stream.to_string(),
                    text: head.to_string(),
                };
                ring.push(l, &self.limits);
                // Written line by line: a ring smaller than one chunk of
                // output must not lose lines the file has room for.
                if let Some(d) = disk.as_mut().filter(|d| d.active) {
                    d.write_pending(ring, &self.limits);
                }
                if tail.is_empty() {
                    break;
                }
                rest = tail;
            }
        }
        if let Some(d) = disk.as_mut() {
            d.flush();
        }
        drop(g);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Ends the log: what is left goes to disk, followers get what is left,
    /// then the end.
    pub fn finish(&self) {
        let mut g = self.inner.lock();
        g.done = true;
        let Inner { ring, disk, .. } = &mut *g;
        if let Some(mut d) = disk.take() {
            d.write_pending(ring, &self.limits);
            d.flush();
            if let Some(f) = d.file.take().and_then(|f| f.into_inner().ok()) {
                let _ = f.sync_all();
            }
        }
        drop(g);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Up to [`PAGE_LINES`] lines from `from` on (led by a line saying how
    /// many were dropped, when some were), and whether the log ended with
    /// them.
    pub fn since(&self, from: u64) -> LogPage {
        let g = self.inner.lock();
        let lines = g.ring.page(from, PAGE_LINES);
        let next = lines.last().map_or(from, |l| l.seq + 1);
        LogPage {
            done: g.done && next >= g.ring.next_seq,
            lines,
        }
    }

    /// The last `max_lines` lines' text joined (for error messages and
    /// tests).
    pub fn tail_text(&self, max_lines: usize) -> String {
        let g = self.inner.lock();
        let lines = &g.ring.lines;
        let skip = lines.len().saturating_sub(max_lines);
        lines
            .range(skip..)
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
/// end is flushed as a last line. Output without a newline is cut every
/// [`MAX_LINE`] bytes, so what waits for one is bounded.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: HashMap<String, Vec<u8>>,
}

/// The longest prefix of `b` of at most `max` bytes that does not end in
/// the middle of a UTF-8 character (all of it when it is not UTF-8 there).
fn utf8_floor(b: &[u8], max: usize) -> usize {
    let mut cut = max.min(b.len());
    // A continuation byte (0b10xx_xxxx) cannot start a character.
    while cut > 0 && cut < b.len() && b[cut] & 0xC0 == 0x80 && max - cut < 4 {
        cut -= 1;
    }
    if cut == 0 {
        max.min(b.len())
    } else {
        cut
    }
}

impl LineSplitter {
    /// Feeds a chunk; returns the complete lines it finished (each ending
    /// in a newline).
    pub fn feed(&mut self, stream: &str, data: &[u8]) -> Option<String> {
        let buf = self.partial.entry(stream.to_string()).or_default();
        buf.extend_from_slice(data);
        let mut out = match buf.iter().rposition(|&b| b == b'\n') {
            Some(end) => {
                let done: Vec<u8> = buf.drain(..=end).collect();
                String::from_utf8_lossy(&done).into_owned()
            }
            None => String::new(),
        };
        while buf.len() >= MAX_LINE {
            let cut = utf8_floor(buf, MAX_LINE);
            let piece: Vec<u8> = buf.drain(..cut).collect();
            out.push_str(&String::from_utf8_lossy(&piece));
            out.push('\n');
        }
        (!out.is_empty()).then_some(out)
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

    fn texts(p: &LogPage) -> Vec<&str> {
        p.lines.iter().map(|l| l.text.as_str()).collect()
    }

    #[test]
    fn lines_are_numbered_persisted_and_reloaded() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("b.log");
        let log = BuildLog::create(&path, LogLimits::default()).expect("create");
        log.push(1, "system", "queued");
        assert!(!path.exists(), "a queued build holds no file");
        log.start();
        log.push(1, "system", "booting\nbooted");
        log.push(2, "stdout", &"x".repeat(MAX_LINE + 5));
        let page = log.since(2);
        assert!(!page.done);
        assert_eq!(page.lines.len(), 3);
        assert_eq!(page.lines[0].text, "booted");
        assert_eq!((page.lines[2].seq, page.lines[2].text.len()), (4, 5));
        log.finish();
        log.push(3, "system", "after the end is dropped");
        let again = BuildLog::load(&path, LogLimits::default());
        let all = again.since(0);
        assert!(all.done);
        assert_eq!(all.lines.len(), 5);
        assert_eq!(all.lines[1].stream, "system");
        assert_eq!(again.tail_text(1).len(), 5);
    }

    #[test]
    fn memory_keeps_the_tail_and_says_what_was_dropped() {
        let dir = tempfile::tempdir().expect("dir");
        let limits = LogLimits {
            max_bytes: 1 << 20,
            max_lines: 100,
        };
        let log = BuildLog::create(&dir.path().join("b.log"), limits).expect("create");
        log.start();
        for i in 0..1000 {
            log.push(i, "stdout", &format!("line {i}"));
        }
        let page = log.since(0);
        assert_eq!(page.lines.len(), 101);
        assert_eq!(page.lines[0].text, "... 900 earlier lines dropped ...");
        assert_eq!(
            (page.lines[0].seq, page.lines[0].stream.as_str()),
            (899, "system")
        );
        assert_eq!(page.lines[1].text, "line 900");
        assert_eq!(page.lines[100].text, "line 999");
        // A reader that kept up gets no marker.
        assert_eq!(texts(&log.since(998)), ["line 998", "line 999"]);
        // Bytes bound it too: a line of 1 KiB each, 16 KiB kept.
        let small = LogLimits {
            max_bytes: 16 << 10,
            max_lines: 100_000,
        };
        let log = BuildLog::create(&dir.path().join("c.log"), small).expect("create");
        for _ in 0..1000 {
            log.push(0, "stdout", &"y".repeat(1024));
        }
        let g = log.inner.lock();
        assert!(g.ring.bytes <= 16 << 10, "{}", g.ring.bytes);
        assert!(g.ring.lines.len() >= 10, "{}", g.ring.lines.len());
    }

    #[test]
    fn pages_are_bounded_and_end_only_at_the_end() {
        let dir = tempfile::tempdir().expect("dir");
        let log = BuildLog::create(&dir.path().join("b.log"), LogLimits::default()).expect("log");
        for i in 0..1000 {
            log.push(i, "stdout", &format!("{i}"));
        }
        log.finish();
        let mut next = 0;
        let mut n = 0;
        loop {
            let page = log.since(next);
            assert!(page.lines.len() <= PAGE_LINES);
            n += page.lines.len();
            next = page.lines.last().map_or(next, |l| l.seq + 1);
            if page.done {
                break;
            }
        }
        assert_eq!(n, 1000);
    }

    #[test]
    fn the_file_is_bounded_and_reloads_its_tail() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("b.log");
        let limits = LogLimits {
            max_bytes: 64 << 10,
            max_lines: 1_000_000,
        };
        let log = BuildLog::create(&path, limits).expect("create");
        log.start();
        for i in 0..20_000 {
            log.push(i, "stdout", &format!("line {i}"));
        }
        log.finish();
        let on_disk = std::fs::metadata(&path).expect("part").len()
            + std::fs::metadata(older_part(&path))
                .expect("older part")
                .len();
        assert!(on_disk <= 64 << 10, "{on_disk}");
        let again = BuildLog::load(&path, limits);
        let page = again.since(0);
        assert!(page.lines[0].text.ends_with("earlier lines dropped ..."));
        let g = again.inner.lock();
        assert_eq!(
            g.ring.lines.back().map(|l| l.text.as_str()),
            Some("line 19999")
        );
        // The tail is contiguous.
        let seqs: Vec<u64> = g.ring.lines.iter().map(|l| l.seq).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
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

    #[test]
    fn splitter_cuts_output_without_newlines() {
        let mut s = LineSplitter::default();
        let mut out = String::new();
        for _ in 0..100 {
            if let Some(t) = s.feed("stdout", "é".repeat(1000).as_bytes()) {
                out.push_str(&t);
            }
            assert!(s.partial["stdout"].len() < MAX_LINE);
        }
        assert!(out
            .lines()
            .all(|l| l.len() <= MAX_LINE && !l.contains('\u{fffd}')));
        let rest = s.flush().pop().map(|(_, t)| t).unwrap_or_default();
        assert_eq!(out.replace('\n', "").len() + rest.len(), 200_000);
    }
}
