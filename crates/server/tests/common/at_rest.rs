//! What a reader of the data directory sees: every file's bytes, to
//! search for a credential that must never rest there in plain text.

/// Every file under `dir`, with its bytes (none for files over 16 MiB).
pub fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                // Sandbox disks are sparse files of gigabytes (the guest's
                // own, not the server's records): named, not read.
                let small = e.metadata().expect("meta").len() <= 16 << 20;
                let bytes = if small {
                    std::fs::read(&p).expect("read")
                } else {
                    Vec::new()
                };
                out.push((p, bytes));
            }
        }
    }
    out
}

pub fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}
