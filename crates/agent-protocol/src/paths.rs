//! Validation of guest paths named by the host.
//!
//! The agent runs as root inside its own VM, so no path is off limits; what
//! matters is that a path is unambiguous (absolute, no NUL, bounded) and that
//! `..` cannot smuggle a destructive operation onto the root itself.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

/// Longest path accepted (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathProblem {
    Empty,
    Relative,
    ContainsNul,
    TooLong,
}

impl std::fmt::Display for PathProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PathProblem::Empty => "path is empty",
            PathProblem::Relative => "path must be absolute",
            PathProblem::ContainsNul => "path contains a NUL byte",
            PathProblem::TooLong => "path is longer than 4096 bytes",
        })
    }
}

/// Checks a guest path given as raw bytes and returns it as a `PathBuf`.
pub fn parse_guest_path(bytes: &[u8]) -> Result<PathBuf, PathProblem> {
    if bytes.is_empty() {
        return Err(PathProblem::Empty);
    }
    if bytes[0] != b'/' {
        return Err(PathProblem::Relative);
    }
    if bytes.contains(&0) {
        return Err(PathProblem::ContainsNul);
    }
    if bytes.len() > MAX_PATH_BYTES {
        return Err(PathProblem::TooLong);
    }
    Ok(PathBuf::from(OsString::from_vec(bytes.to_vec())))
}

/// Lexically resolves `.` and `..` (clamped at `/`). Used to recognise
/// `/workspace/../..`-style spellings of `/`, not to open files.
pub fn lexical_normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_relative_nul_empty_and_long() {
        assert_eq!(parse_guest_path(b""), Err(PathProblem::Empty));
        assert_eq!(parse_guest_path(b"etc/passwd"), Err(PathProblem::Relative));
        assert_eq!(parse_guest_path(b"../x"), Err(PathProblem::Relative));
        assert_eq!(parse_guest_path(b"/a\0b"), Err(PathProblem::ContainsNul));
        assert_eq!(parse_guest_path(&[b'/'; 5000]), Err(PathProblem::TooLong));
    }

    #[test]
    fn accepts_non_utf8_bytes() {
        let p = parse_guest_path(b"/tmp/\xff\xfe").unwrap();
        assert_eq!(p.as_os_str().len(), 7);
    }

    #[test]
    fn dotdot_spellings_of_root_normalize_to_root() {
        assert_eq!(
            lexical_normalize(Path::new("/workspace/../..")),
            PathBuf::from("/")
        );
        assert_eq!(
            lexical_normalize(Path::new("/a/./b/../c")),
            PathBuf::from("/a/c")
        );
    }
}
