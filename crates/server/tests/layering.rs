//! The server's layers, checked: `hearth-core` depends on no HTTP crate
//! (so the compiler keeps HTTP types out of it) and names none; routes and
//! the preview proxy reach the guest agent, the store and the VMM driver
//! only through core. A line that breaks a rule fails this test with its
//! file and line number (ARCHITECTURE.md says why the rules exist).

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

/// Every line under `root` (comments excluded) containing one of `banned`.
fn offenders(root: &Path, banned: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
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

fn core_crate() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../core")
}

#[test]
fn core_depends_on_no_http_crate_and_names_no_http_type() {
    let manifest = std::fs::read_to_string(core_crate().join("Cargo.toml")).expect("core manifest");
    for dep in [
        "axum",
        "http",
        "http-body",
        "hyper",
        "tower",
        "reqwest",
        "hearth-server",
    ] {
        let named = manifest.lines().any(|l| {
            let l = l.trim_start();
            l.starts_with(&format!("{dep} ")) || l.starts_with(&format!("{dep}."))
        });
        assert!(!named, "hearth-core must not depend on {dep}");
    }
    let hits = offenders(&core_crate().join("src"), &["axum", "http::", "StatusCode"]);
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
        let hits = offenders(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir),
            &banned,
        );
        assert!(
            hits.is_empty(),
            "{dir} must call core, not the agent, store or driver:\n{}",
            hits.join("\n")
        );
    }
}
