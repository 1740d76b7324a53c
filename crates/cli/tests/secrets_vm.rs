//! The secrets vault on a real VM, driven by the CLI: `hearth secret set`
//! binds a secret to a sandbox, `printenv` in the guest sees it (masked
//! in what the API answers), rotation and unbinding apply to the next
//! command, and neither value is in the data directory or the server's
//! log.

mod common;

use common::*;
use serde_json::json;

const FIRST: &str = "ghp_first0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5";
const SECOND: &str = "ghp_second9f8e7d6c5b4a39281706f5e4d3c2b1";

/// `$GITHUB_TOKEN` in the guest, reversed (so the API's masking of the
/// exact value does not hide it), or `-` when unset.
const REVERSED: &str =
    "if [ -n \"${GITHUB_TOKEN+x}\" ]; then printf %s \"$GITHUB_TOKEN\" | rev; else printf -; fi";

fn rev(s: &str) -> String {
    s.chars().rev().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots real VMs; run with --run-ignored (scripts/test does)"]
async fn a_secret_set_with_the_cli_reaches_the_guest_and_rests_nowhere() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (server, api) = fresh_server(tmp.path()).await;
    let (st, v) = api
        .call(
            "POST",
            "/sandboxes",
            Some(json!({"template_id": "minimal", "memory_mb": 256, "disk_size_mb": 512})),
        )
        .await;
    assert_eq!(st, 201, "{v}\n{}", server.log());
    let id = v["data"]["id"].as_str().expect("id").to_string();

    let (code, out, err) = hearth_with(
        &api,
        &[
            "secret",
            "set",
            "gh",
            "--from-env",
            "MY_TOKEN",
            "--sandbox",
            &id,
            "--env",
            "GITHUB_TOKEN",
        ],
        &[("MY_TOKEN", FIRST)],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("gh") && !out.contains(FIRST), "{out}");

    assert_eq!(api.exec(&id, REVERSED).await["stdout"], rev(FIRST));
    // The guest's env lists it (the minimal image has `env`, not
    // `printenv`); the API masks the value in what it answers.
    let r = api.exec(&id, "env | grep '^GITHUB_TOKEN='").await;
    assert_eq!(r["stdout"], "GITHUB_TOKEN=***\n", "{r}");

    // Rotated from stdin: the next command gets the new value.
    let (code, out, err) = hearth_with(
        &api,
        &["secret", "set", "gh"],
        &[],
        Some(&format!("{SECOND}\n")),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(api.exec(&id, REVERSED).await["stdout"], rev(SECOND));

    let (code, out, _) = hearth(&api, &["secret", "ls", "--sandbox", &id]);
    assert_eq!(code, 0);
    assert!(out.contains("gh") && !out.contains(SECOND), "{out}");

    // Unbound: the next command no longer has it.
    let (code, out, err) = hearth(&api, &["secret", "unbind", "gh", "--sandbox", &id]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(api.exec(&id, REVERSED).await["stdout"], "-");

    // Neither value rests in the data directory, nor in the server's log.
    let data = tmp.path().join("data");
    let out = std::process::Command::new("grep")
        .args(["-r", "-a", "-l", "-e", FIRST, "-e", SECOND])
        .arg(&data)
        .output()
        .expect("grep");
    assert!(
        out.stdout.is_empty(),
        "found in: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let log = server.log();
    assert!(
        !log.contains(FIRST) && !log.contains(SECOND),
        "the log holds a value"
    );

    let (code, _, err) = hearth(&api, &["secret", "rm", "gh"]);
    assert_eq!(code, 0, "{err}");
    let (st, v) = api.call("DELETE", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(st, 200, "{v}");
}
