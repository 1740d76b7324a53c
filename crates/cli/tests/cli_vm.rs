//! The `hearth` command's client subcommands (`sandbox`, `template`,
//! `preview`) run as a real binary against a real `hearth serve` with real
//! QEMU VMs.

mod common;

use common::*;
use serde_json::Value;

/// `hearth sandbox ...` against `api`: (exit code, stdout, stderr).
fn cli(api: &Api, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["sandbox"];
    all.extend_from_slice(args);
    hearth(api, &all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots real VMs; run with --run-ignored (scripts/test does)"]
async fn the_cli_creates_execs_copies_lists_and_removes_sandboxes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (server, api) = fresh_server(tmp.path()).await;
    let api = &api;
    let (code, out, err) = tokio::task::block_in_place(|| {
        cli(
            api,
            &[
                "create",
                "--template",
                "minimal",
                "--memory-mb",
                "256",
                "--disk-mb",
                "512",
                "--json",
            ],
        )
    });
    assert_eq!(code, 0, "{out}{err}\n{}", server.log());
    let created: Value = serde_json::from_str(out.trim()).expect("create --json");
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(created["state"], "running");

    // exec streams and passes the exit code on.
    let (code, out, err) = tokio::task::block_in_place(|| {
        cli(
            api,
            &[
                "exec",
                &id,
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 3",
            ],
        )
    });
    assert_eq!((code, out.as_str(), err.as_str()), (3, "out\n", "err\n"));
    let (code, out, _) =
        tokio::task::block_in_place(|| cli(api, &["exec", &id, "--", "echo", "it's", "a b"]));
    assert_eq!(
        (code, out.as_str()),
        (0, "it's a b\n"),
        "arguments are quoted"
    );

    // cp both ways.
    let local = tmp.path().join("in.bin");
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&local, &payload).expect("write");
    let dest = format!("{id}:/workspace/in.bin");
    let (code, _, err) =
        tokio::task::block_in_place(|| cli(api, &["cp", local.to_str().expect("utf8"), &dest]));
    assert_eq!(code, 0, "{err}");
    let back = tmp.path().join("back.bin");
    let (code, _, err) =
        tokio::task::block_in_place(|| cli(api, &["cp", &dest, back.to_str().expect("utf8")]));
    assert_eq!(code, 0, "{err}");
    assert!(
        std::fs::read(&back).expect("read") == payload,
        "cp round trip"
    );

    // ls --json parses; the table names the sandbox.
    let (code, out, _) = tokio::task::block_in_place(|| cli(api, &["ls", "--json"]));
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(out.trim()).expect("ls --json");
    assert!(list
        .as_array()
        .expect("array")
        .iter()
        .any(|s| s["id"] == id.as_str()));
    let (_, table, _) = tokio::task::block_in_place(|| cli(api, &["ls"]));
    assert!(table.starts_with("ID") && table.contains(&id), "{table}");

    // Errors are one clear line, never a panic.
    let (code, out, err) =
        tokio::task::block_in_place(|| cli(api, &["get", "sbx_nosuchsandbox00"]));
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(
        err.starts_with("error: ") && err.contains("not found") && err.lines().count() == 1,
        "{err}"
    );
    assert!(!err.contains("panicked"));

    let (code, _, err) = tokio::task::block_in_place(|| cli(api, &["rm", &id]));
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = tokio::task::block_in_place(|| cli(api, &["get", &id, "--json"]));
    let gone: Value = serde_json::from_str(out.trim()).expect("get --json");
    assert_eq!(gone["state"], "destroyed");
}
