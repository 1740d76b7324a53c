//! The line exchanged before HTTP/2 starts on every connection.
//!
//! A virtio-serial port replays bytes queued before a snapshot to every clone,
//! and a host may reconnect while stale bytes sit in either direction. So the
//! host opens with `HEARTH-HELLO <generation> <version>\n` carrying a fresh
//! generation; the agent skips everything before that line and answers
//! `HEARTH-READY <generation> <version>\n`; the host skips everything before
//! the answer carrying its own generation. Only then does HTTP/2 begin.
//!
//! The host resends its hello with a new generation until an answer arrives
//! (a hello can be swallowed by an agent still reading a dead session), so the
//! agent may see several hellos: it answers each one and hands the stream to
//! HTTP/2 only at the client preface line ([`H2_PREFACE_LINE`]). Answers for
//! older generations precede the one the host waits for, so nothing but
//! HTTP/2 follows that answer.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const HELLO_PREFIX: &str = "HEARTH-HELLO ";
pub const READY_PREFIX: &str = "HEARTH-READY ";
/// Longest line either side accepts; longer garbage is skipped.
pub const MAX_LINE: usize = 128;
/// First line of the HTTP/2 client connection preface, without its `\n`.
pub const H2_PREFACE_LINE: &[u8] = b"PRI * HTTP/2.0\r";
/// Longest pause between the host's hellos while no answer came (it starts
/// at 10 ms and doubles).
pub const HELLO_RETRY_MS: u64 = 250;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Hello {
    pub generation: u64,
    pub protocol_version: u32,
}

impl Hello {
    pub fn hello_line(&self) -> String {
        format!(
            "{HELLO_PREFIX}{} {}\n",
            self.generation, self.protocol_version
        )
    }

    pub fn ready_line(&self) -> String {
        format!(
            "{READY_PREFIX}{} {}\n",
            self.generation, self.protocol_version
        )
    }

    /// Parses one line (without its `\n`) that starts with `prefix`.
    pub fn parse(line: &[u8], prefix: &str) -> Option<Hello> {
        let rest = line.strip_prefix(prefix.as_bytes())?;
        let rest = std::str::from_utf8(rest).ok()?;
        let mut it = rest.trim_end_matches('\r').split(' ');
        let generation = it.next()?.parse().ok()?;
        let protocol_version = it.next()?.parse().ok()?;
        if it.next().is_some() {
            return None;
        }
        Some(Hello {
            generation,
            protocol_version,
        })
    }
}

/// Incremental line splitter that finds the handshake line in a byte stream
/// full of stale data. Bytes after the matched line are returned as leftover:
/// they belong to the next protocol layer.
#[derive(Debug, Default)]
pub struct LineScanner {
    line: Vec<u8>,
    overflow: bool,
}

impl LineScanner {
    /// Feeds bytes; returns the first line accepted by `accept` and the bytes
    /// that followed it in `input`.
    pub fn feed<'a, T>(
        &mut self,
        input: &'a [u8],
        mut accept: impl FnMut(&[u8]) -> Option<T>,
    ) -> Option<(T, &'a [u8])> {
        for (i, &b) in input.iter().enumerate() {
            if b == b'\n' {
                let hit = if self.overflow {
                    None
                } else {
                    accept(&self.line)
                };
                self.line.clear();
                self.overflow = false;
                if let Some(t) = hit {
                    return Some((t, &input[i + 1..]));
                }
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            } else {
                self.overflow = true;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hello_after_stale_bytes_and_keeps_leftover() {
        let h = Hello {
            generation: 42,
            protocol_version: 1,
        };
        let mut input = b"\x00\x01stale h2 frames\nHEARTH-HELLO 41 1 junk\n".to_vec();
        input.extend_from_slice(h.hello_line().as_bytes());
        input.extend_from_slice(b"PRI * HTTP/2.0");
        let mut s = LineScanner::default();
        let (got, rest) = s.feed(&input, |l| Hello::parse(l, HELLO_PREFIX)).unwrap();
        assert_eq!(got, h);
        assert_eq!(rest, b"PRI * HTTP/2.0");
    }

    #[test]
    fn hello_split_across_reads() {
        let line = Hello {
            generation: 7,
            protocol_version: 3,
        }
        .ready_line();
        let (a, b) = line.as_bytes().split_at(5);
        let mut s = LineScanner::default();
        assert!(s.feed(a, |l| Hello::parse(l, READY_PREFIX)).is_none());
        let (got, rest) = s.feed(b, |l| Hello::parse(l, READY_PREFIX)).unwrap();
        assert_eq!(got.generation, 7);
        assert!(rest.is_empty());
    }

    #[test]
    fn overlong_line_is_skipped() {
        let mut input = vec![b'x'; MAX_LINE * 3];
        input.extend_from_slice(b"HEARTH-HELLO 1 1\n");
        let mut s = LineScanner::default();
        // The overlong garbage and the hello share a line: rejected as a whole.
        assert!(s.feed(&input, |l| Hello::parse(l, HELLO_PREFIX)).is_none());
        let (got, _) = s
            .feed(b"HEARTH-HELLO 2 1\n", |l| Hello::parse(l, HELLO_PREFIX))
            .unwrap();
        assert_eq!(got.generation, 2);
    }
}
