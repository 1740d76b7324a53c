//! The guest's serial console, kept bounded. QEMU serves it on a Unix
//! socket; one task per VM reads it and keeps the newest output in
//! `console.log`, moving it to `console.log.1` whenever it passes [`CAP`].
//! So a guest that prints forever costs the host at most two caps of disk
//! and one read buffer of memory, and only a tail is ever read back
//! ([`tail`]). While no reader is connected (a server restart), QEMU drops
//! the output rather than block the guest.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes `console.log` may hold before it is rotated.
pub const CAP: u64 = 256 << 10;
/// Bytes of log read back for a tail.
const TAIL_BYTES: u64 = 16 << 10;

/// Starts the pump of one VM's console; it ends when QEMU closes the
/// socket (or never opens it by `deadline`).
pub(crate) fn spawn(
    socket: PathBuf,
    log: PathBuf,
    old: PathBuf,
    deadline: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut stream = loop {
            match tokio::net::UnixStream::connect(&socket).await {
                Ok(s) => break s,
                Err(_) if started.elapsed() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => {
                    tracing::warn!(socket = %socket.display(), error = %e, "console not connected");
                    return;
                }
            }
        };
        if let Err(e) = pump(&mut stream, &log, &old).await {
            tracing::debug!(error = %e, "console pump ended");
        }
    })
}

async fn open_append(path: &Path) -> std::io::Result<(tokio::fs::File, u64)> {
    let f = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await?;
    let len = f.metadata().await?.len();
    Ok((f, len))
}

async fn pump(stream: &mut tokio::net::UnixStream, log: &Path, old: &Path) -> std::io::Result<()> {
    let (mut file, mut size) = open_append(log).await?;
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return file.flush().await;
        }
        if size + n as u64 > CAP {
            file.flush().await?;
            drop(file);
            tokio::fs::rename(log, old).await?;
            (file, size) = open_append(log).await?;
        }
        // tokio's file writes in the background: flushing makes what the
        // guest printed readable (a tail, an error message) at once.
        file.write_all(&buf[..n]).await?;
        file.flush().await?;
        size += n as u64;
    }
}

/// The last `lines` lines of a console (or any rotated) log: at most the
/// last 16 KiB of `path`, preceded by the end of `path.1` when `path` holds
/// less than that. `None` when neither file exists.
pub fn tail(path: &Path, lines: usize) -> Option<String> {
    let mut bytes = Vec::new();
    let mut rotated = path.as_os_str().to_owned();
    rotated.push(".1");
    let current = last_bytes(path, TAIL_BYTES);
    if current.as_ref().map_or(0, |b| b.len() as u64) < TAIL_BYTES {
        let want = TAIL_BYTES - current.as_ref().map_or(0, |b| b.len() as u64);
        if let Some(b) = last_bytes(Path::new(&rotated), want) {
            bytes.extend(b);
        }
    }
    match current {
        Some(b) => bytes.extend(b),
        None if bytes.is_empty() => return None,
        None => {}
    }
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    Some(all[all.len().saturating_sub(lines)..].join("\n"))
}

fn last_bytes(path: &Path, n: u64) -> Option<Vec<u8>> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(n))).ok()?;
    let mut buf = Vec::with_capacity(n.min(len) as usize);
    f.take(n).read_to_end(&mut buf).ok()?;
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn endless_output_stays_under_two_caps_and_the_tail_is_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("console.sock");
        let log = dir.path().join("console.log");
        let old = dir.path().join("console.log.1");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let task = spawn(
            sock.clone(),
            log.clone(),
            old.clone(),
            Duration::from_secs(5),
        );
        let (mut qemu, _) = listener.accept().await.unwrap();
        // 10 MiB of lines, then a last line.
        let line = format!("{}\n", "y".repeat(1023));
        for _ in 0..10 * 1024 {
            qemu.write_all(line.as_bytes()).await.unwrap();
        }
        qemu.write_all(b"the last line\n").await.unwrap();
        drop(qemu);
        task.await.unwrap();
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert!(
            size(&log) <= CAP && size(&old) <= CAP,
            "{} {}",
            size(&log),
            size(&old)
        );
        assert!(size(&log) + size(&old) > CAP / 2, "output kept");
        assert_eq!(tail(&log, 1).unwrap(), "the last line");
        assert_eq!(tail(&log, 3).unwrap().lines().count(), 3);
    }

    #[test]
    fn tail_spans_the_rotation_and_reads_little() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        std::fs::write(dir.path().join("console.log.1"), "a\nb\n".repeat(100_000)).unwrap();
        std::fs::write(&log, "c\n").unwrap();
        assert_eq!(tail(&log, 3).unwrap(), "a\nb\nc");
        assert_eq!(tail(&dir.path().join("nope"), 3), None);
    }
}
