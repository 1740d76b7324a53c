//! Guest users from `/etc/passwd`, read directly: the agent is a static
//! binary, and glibc's NSS lookups (`getpwnam`) need shared libraries that a
//! minimal rootfs does not have.

use std::path::{Path, PathBuf};

/// One `/etc/passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: PathBuf,
}

/// Parses passwd text, skipping malformed lines.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 || f[0].is_empty() || line.starts_with('#') {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: PathBuf::from(f[5]),
                shell: PathBuf::from(f[6]),
            })
        })
        .collect()
}

/// Looks a user up by name in `passwd_path`.
pub fn by_name(passwd_path: &Path, name: &str) -> std::io::Result<Option<PasswdEntry>> {
    Ok(read(passwd_path)?.into_iter().find(|e| e.name == name))
}

/// Looks a user up by uid in `passwd_path`.
pub fn by_uid(passwd_path: &Path, uid: u32) -> std::io::Result<Option<PasswdEntry>> {
    Ok(read(passwd_path)?.into_iter().find(|e| e.uid == uid))
}

fn read(path: &Path) -> std::io::Result<Vec<PasswdEntry>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(parse_passwd(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_and_skips_garbage() {
        let t = "root:x:0:0:root:/root:/bin/bash\n# comment\nbroken line\n\
                 sandbox:x:1000:1000::/home/sandbox:/bin/sh\nbad:x:notanumber:1::/:/bin/sh\n";
        let e = parse_passwd(t);
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].name, "sandbox");
        assert_eq!(e[1].uid, 1000);
        assert_eq!(e[1].home, PathBuf::from("/home/sandbox"));
    }
}
