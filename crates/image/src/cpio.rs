//! The `newc` cpio format the kernel unpacks as an initramfs: a writer that
//! creates parent directories on demand, and a reader used to check archives.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFMT: u32 = 0o170_000;

/// Streams a newc archive into `out`. Names are taken relative to the archive
/// root (a leading `/` is dropped); every parent directory is emitted (mode
/// 0755) before its first child, because the kernel does not create them.
/// Owner is root and mtime is 0, so equal inputs give equal bytes.
#[derive(Debug)]
pub struct NewcWriter<W: Write> {
    out: W,
    offset: u64,
    next_ino: u32,
    dirs: BTreeSet<String>,
}

impl<W: Write> NewcWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            offset: 0,
            next_ino: 1,
            dirs: BTreeSet::new(),
        }
    }

    /// Adds a directory; `mode` holds the permission bits only.
    pub fn dir(&mut self, name: &str, mode: u32) -> io::Result<()> {
        let name = normalize(name)?;
        if self.dirs.contains(name) {
            return Ok(());
        }
        self.parents(name)?;
        self.dirs.insert(name.to_owned());
        self.entry(name, S_IFDIR | (mode & 0o7777), 2, (0, 0), 0)
    }

    /// Adds a regular file with the given contents.
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.file_from_reader(name, mode, data.len() as u64, &mut &data[..])
    }

    /// Adds a regular file of exactly `len` bytes read from `reader`.
    pub fn file_from_reader(
        &mut self,
        name: &str,
        mode: u32,
        len: u64,
        reader: &mut impl Read,
    ) -> io::Result<()> {
        let name = normalize(name)?;
        self.parents(name)?;
        if len > u64::from(u32::MAX) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name} is too large for newc ({len} bytes)"),
            ));
        }
        self.entry(name, S_IFREG | (mode & 0o7777), 1, (0, 0), len as u32)?;
        let copied = io::copy(&mut reader.take(len), &mut self.out)?;
        if copied != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{name}: expected {len} bytes, read {copied}"),
            ));
        }
        self.offset += len;
        self.pad()
    }

    /// Adds a character device node.
    pub fn char_device(&mut self, name: &str, mode: u32, major: u32, minor: u32) -> io::Result<()> {
        let name = normalize(name)?;
        self.parents(name)?;
        self.entry(name, S_IFCHR | (mode & 0o7777), 1, (major, minor), 0)
    }

    /// Adds a symbolic link pointing at `target`.
    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        let name = normalize(name)?;
        self.parents(name)?;
        self.entry(name, S_IFLNK | 0o777, 1, (0, 0), target.len() as u32)?;
        self.out.write_all(target.as_bytes())?;
        self.offset += target.len() as u64;
        self.pad()
    }

    /// Writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header(TRAILER, 0, 0, 1, (0, 0), 0)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn parents(&mut self, name: &str) -> io::Result<()> {
        let mut end = 0;
        while let Some(pos) = name[end..].find('/') {
            let parent = &name[..end + pos];
            if !self.dirs.contains(parent) {
                self.dirs.insert(parent.to_owned());
                self.entry(parent, S_IFDIR | 0o755, 2, (0, 0), 0)?;
            }
            end += pos + 1;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        size: u32,
    ) -> io::Result<()> {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.header(name, ino, mode, nlink, rdev, size)
    }

    fn header(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        size: u32,
    ) -> io::Result<()> {
        let namesize = name.len() as u32 + 1;
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        let mut header = String::with_capacity(HEADER_LEN);
        header.push_str("070701");
        for field in fields {
            header.push_str(&format!("{field:08x}"));
        }
        debug_assert_eq!(header.len(), HEADER_LEN);
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.offset += (HEADER_LEN + name.len() + 1) as u64;
        self.pad()
    }

    fn pad(&mut self) -> io::Result<()> {
        let padding = (4 - (self.offset % 4) as usize) % 4;
        self.out.write_all(&[0u8; 3][..padding])?;
        self.offset += padding as u64;
        Ok(())
    }
}

fn normalize(name: &str) -> io::Result<&str> {
    let name = name.trim_start_matches('/');
    let bad = name.is_empty()
        || name == TRAILER
        || name.ends_with('/')
        || name.contains('\0')
        || name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid archive path {name:?}"),
        ));
    }
    Ok(name)
}

/// What an archive member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
    CharDevice { major: u32, minor: u32 },
    Other,
}

/// One member of a parsed archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpioEntry {
    pub name: String,
    pub kind: EntryKind,
    /// Permission bits (without the file type).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub data: Vec<u8>,
}

/// Parses a whole (uncompressed) newc archive up to its trailer.
pub fn parse(mut bytes: &[u8]) -> io::Result<Vec<CpioEntry>> {
    fn invalid(msg: String) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, msg)
    }
    let total = bytes.len();
    let mut entries = Vec::new();
    loop {
        let at = total - bytes.len();
        if bytes.len() < HEADER_LEN || &bytes[..6] != MAGIC {
            return Err(invalid(format!("no newc header at offset {at}")));
        }
        let field = |i: usize| -> io::Result<u32> {
            let raw = &bytes[6 + i * 8..6 + (i + 1) * 8];
            let text =
                std::str::from_utf8(raw).map_err(|_| invalid(format!("bad field at {at}")))?;
            u32::from_str_radix(text, 16)
                .map_err(|_| invalid(format!("bad field {text:?} at {at}")))
        };
        let (mode, uid, gid, size) = (field(1)?, field(2)?, field(3)?, field(6)? as usize);
        let (rmajor, rminor, namesize) = (field(9)?, field(10)?, field(11)? as usize);
        let name_end = HEADER_LEN + namesize;
        let data_start = name_end.div_ceil(4) * 4;
        let data_end = data_start + size;
        if namesize == 0 || bytes.len() < data_end {
            return Err(invalid(format!("truncated entry at offset {at}")));
        }
        let name = String::from_utf8_lossy(&bytes[HEADER_LEN..name_end - 1]).into_owned();
        if name == TRAILER {
            return Ok(entries);
        }
        let kind = match mode & S_IFMT {
            S_IFDIR => EntryKind::Dir,
            S_IFREG => EntryKind::File,
            S_IFLNK => EntryKind::Symlink,
            S_IFCHR => EntryKind::CharDevice {
                major: rmajor,
                minor: rminor,
            },
            _ => EntryKind::Other,
        };
        entries.push(CpioEntry {
            name,
            kind,
            perm: mode & 0o7777,
            uid,
            gid,
            data: bytes[data_start..data_end].to_vec(),
        });
        bytes = &bytes[(data_end.div_ceil(4) * 4).min(bytes.len())..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn sample() -> Vec<u8> {
        let mut w = NewcWriter::new(Vec::new());
        w.dir("/dev", 0o755).unwrap();
        w.char_device("/dev/console", 0o600, 5, 1).unwrap();
        w.file("/init", 0o755, b"#!agent").unwrap();
        w.file("lib/modules/6.1/kernel/a.ko", 0o644, b"abcde")
            .unwrap();
        w.symlink("bin/sh", "/bin/busybox").unwrap();
        w.dir("lib", 0o700).unwrap(); // already created as a parent: ignored
        w.finish().unwrap()
    }

    #[test]
    fn headers_and_data_are_four_byte_aligned() {
        let bytes = sample();
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(&bytes[..6], b"070701");
        // The first entry is "dev": header + "dev\0" = 114 bytes, padded to 116.
        assert_eq!(&bytes[110..114], b"dev\0");
        assert_eq!(&bytes[114..116], b"\0\0");
        assert_eq!(&bytes[116..122], b"070701");
    }

    #[test]
    fn written_archive_parses_back_with_parents_first() {
        let entries = parse(&sample()).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/6.1",
                "lib/modules/6.1/kernel",
                "lib/modules/6.1/kernel/a.ko",
                "bin",
                "bin/sh",
            ]
        );
        let console = &entries[1];
        assert_eq!(console.kind, EntryKind::CharDevice { major: 5, minor: 1 });
        assert_eq!(console.perm, 0o600);
        let init = &entries[2];
        assert_eq!(
            (init.kind, init.perm, init.data.as_slice()),
            (EntryKind::File, 0o755, &b"#!agent"[..])
        );
        assert_eq!(entries[3].perm, 0o755, "auto-created parent keeps 0755");
        assert_eq!(entries[7].data, b"abcde");
        assert_eq!(
            (entries[9].kind, entries[9].data.as_slice()),
            (EntryKind::Symlink, &b"/bin/busybox"[..])
        );
        assert!(entries.iter().all(|e| e.uid == 0 && e.gid == 0));
    }

    #[test]
    fn gnu_cpio_lists_the_archive() {
        let mut child = Command::new("cpio")
            .args(["-itv", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cpio is installed (scripts/setup)");
        child.stdin.take().unwrap().write_all(&sample()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 10, "{listing}");
        assert!(
            lines[0].starts_with("drwxr-xr-x") && lines[0].ends_with(" dev"),
            "{listing}"
        );
        assert!(
            lines[1].starts_with("crw-------")
                && lines[1].contains(" 5,")
                && lines[1].ends_with(" dev/console"),
            "{listing}"
        );
        assert!(
            lines[2].starts_with("-rwxr-xr-x")
                && lines[2].contains(" 7 ")
                && lines[2].ends_with(" init"),
            "{listing}"
        );
        assert!(
            lines[7].starts_with("-rw-r--r--") && lines[7].ends_with("lib/modules/6.1/kernel/a.ko"),
            "{listing}"
        );
        assert!(
            lines[9].starts_with("lrwxrwxrwx") && lines[9].ends_with("bin/sh -> /bin/busybox"),
            "{listing}"
        );
    }

    #[test]
    fn rejects_unsafe_names() {
        let mut w = NewcWriter::new(Vec::new());
        for bad in ["", "/", "a/../b", "a//b", "TRAILER!!!", "dir/"] {
            assert!(w.file(bad, 0o644, b"").is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn short_reader_is_an_error() {
        let mut w = NewcWriter::new(Vec::new());
        let err = w
            .file_from_reader("f", 0o644, 10, &mut &b"abc"[..])
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
