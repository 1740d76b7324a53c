//! Issue 16 on a real VM, driven by the CLI: `hearth secret set` binds a
//! secret to a sandbox, the guest's env has it (masked in what the API
//! answers), rotation and unbinding apply to the next command, and neither
//! value is in the data directory or the server's log; `hearth token
//! create` mints a token that can exec there and nothing more, until
//! `hearth token revoke`; `hearth audit` shows it all.

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
async fn secrets_tokens_and_the_audit_log_through_the_cli_on_a_real_vm() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (server, api) = fresh_server(tmp.path()).await;
    let id = api
        .create(
            json!({"template_id": "minimal", "memory_mb": 256, "disk_size_mb": 512}),
            &server,
        )
        .await;

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

    // A token the CLI mints, limited to exec on this sandbox: it execs in
    // the VM, cannot create, and is refused once revoked.
    let (code, token, err) = hearth(
        &api,
        &[
            "token",
            "create",
            "--user",
            "alice",
            "--workspace",
            "acme",
            "--scope",
            "sandboxes:exec",
            "--sandbox",
            &id,
            "--ttl",
            "600",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let token = token.trim().to_string();
    assert!(token.starts_with("hk_st_"), "{token}");
    let scoped = Api {
        key: token.clone(),
        ..api.clone()
    };
    assert_eq!(
        scoped.exec(&id, "echo from-token").await["stdout"],
        "from-token\n"
    );
    let (st, v) = scoped.call("POST", "/sandboxes", Some(json!({}))).await;
    assert_eq!(st, 403, "{v}");
    let (code, out, _) = hearth(&api, &["token", "ls"]);
    assert_eq!(code, 0);
    assert!(out.contains("alice") && !out.contains(&token), "{out}");
    let token_id = out
        .lines()
        .find(|l| l.contains("alice"))
        .and_then(|l| l.split_whitespace().next())
        .expect("the token's row")
        .to_string();
    let (code, _, err) = hearth(&api, &["token", "revoke", &token_id]);
    assert_eq!(code, 0, "{err}");
    let (st, _) = scoped.call("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(st, 401);

    // The audit log shows it all, for this sandbox, with the token's exec
    // and its refused create.
    let (code, out, err) = hearth(&api, &["audit", "--sandbox", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("sandbox.exec") && out.contains("echo from-token"),
        "{out}"
    );
    assert!(out.contains("scoped_token:"), "{out}");
    let (code, out, _) = hearth(&api, &["audit", "--type", "sandbox.create", "--json"]);
    assert_eq!(code, 0);
    let entries: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(
        entries
            .as_array()
            .expect("list")
            .iter()
            .any(|e| e["outcome"] == "denied" && e["actor_type"] == "scoped_token"),
        "{out}"
    );
    let (st, v) = api.call("DELETE", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(st, 200, "{v}");
}
