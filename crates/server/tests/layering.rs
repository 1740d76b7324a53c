//! The server's layers, checked: `core` speaks sandboxes and never names an
//! HTTP type; routes and the preview proxy reach the guest agent, the store
//! and the VMM driver only through core. A line that breaks a rule fails
//! this test with its file and line number (ARCHITECTURE.md says why the
//! rules exist).

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every line under `dir` (comments excluded) containing one of `banned`.
fn offenders(dir: &str, banned: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(!files.is_empty(), "no sources under {}", root.display());
    let mut hits = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read source");
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            if let Some(b) = banned.iter().find(|b| code.contains(*b)) {
                hits.push(format!("{}:{}: {b}: {}", f.display(), n + 1, code));
            }
        }
    }
    hits
}

#[test]
fn core_never_names_http() {
    let hits = offenders(
        "core",
        &[
            "axum",
            "http::",
            "StatusCode",
            "crate::routes",
            "crate::error::",
        ],
    );
    assert!(
        hits.is_empty(),
        "core must not speak HTTP:\n{}",
        hits.join("\n")
    );
}

#[test]
fn routes_and_proxy_go_through_core() {
    let banned = [
        "hearth_agent_client",
        "crate::store",
        ".store.",
        "hearth_vmm::",
    ];
    for dir in ["routes", "proxy"] {
        let hits = offenders(dir, &banned);
        assert!(
            hits.is_empty(),
            "{dir} must call core, not the agent, store or driver:\n{}",
            hits.join("\n")
        );
    }
}
