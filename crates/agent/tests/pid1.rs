//! The agent as PID 1 of a new PID namespace (as in a VM): it mounts /proc,
//! reaps orphans without stealing its own children's exit codes, and shuts
//! down on SIGTERM. Needs root for `unshare`; CI runs as root.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use hearth_agent_protocol::ExecRequest;
use hearth_test_support::{require_root, wait_until, AgentProcess};

const AGENT: &str = env!("CARGO_BIN_EXE_hearth-agent");
const UNSHARE: &[&str] = &[
    "unshare",
    "--pid",
    "--fork",
    "--kill-child",
    "--mount",
    "--propagation",
    "private",
];

async fn zombies(c: &hearth_agent_client::AgentClient) -> usize {
    let r = c
        .exec(&ExecRequest {
            command: "cat /proc/[0-9]*/stat 2>/dev/null".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    String::from_utf8_lossy(&r.stdout.0)
        .lines()
        .filter(|l| {
            l.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .count()
}

#[tokio::test]
#[ignore = "needs root (unshare --pid); run with --run-ignored (scripts/test does, as root)"]
async fn pid1_reaps_orphans_and_keeps_exit_codes() {
    require_root("unshare --pid");
    let agent = AgentProcess::start_wrapped(UNSHARE, AGENT.as_ref(), &[])
        .await
        .unwrap();
    let c = agent.client();
    assert!(
        c.health().await.unwrap().pid1,
        "agent must see itself as PID 1"
    );
    // Its /proc is the namespace's: the agent is 1.
    let r = c
        .exec(&ExecRequest {
            command: "cat /proc/1/comm".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout.0).trim(), "hearth-agent");

    // Orphans: each command leaves a grandchild that outlives it and is
    // reparented to PID 1, while other commands' exit codes must still arrive.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let command = if i % 2 == 0 {
                "(sleep 0.1 &) ; (sleep 0.2 &) ; exit 42".to_string()
            } else {
                "exit 42".to_string()
            };
            c.exec(&ExecRequest {
                command,
                ..Default::default()
            })
            .await
            .unwrap()
            .exit_code
        }));
    }
    for t in tasks {
        assert_eq!(
            t.await.unwrap(),
            42,
            "an exit code was stolen by the reaper"
        );
    }
    let z = wait_until(Duration::from_secs(10), "orphans reaped", || {
        let c = c.clone();
        async move { Some(zombies(&c).await).filter(|&n| n == 0) }
    })
    .await;
    assert!(z.is_ok(), "zombies left: {}", zombies(&c).await);
}

#[tokio::test]
#[ignore = "needs root (unshare --pid); run with --run-ignored (scripts/test does, as root)"]
async fn pid1_shuts_down_on_sigterm() {
    require_root("unshare --pid");
    let mut agent = AgentProcess::start_wrapped(UNSHARE, AGENT.as_ref(), &[])
        .await
        .unwrap();
    let c = agent.client();
    c.health().await.unwrap();
    // A process that would keep the namespace alive if nobody killed it.
    c.process_start(&hearth_agent_protocol::StartProcessRequest {
        command: "trap '' TERM; sleep 1000".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    // The agent is unshare's only child.
    let unshare = agent.pid().unwrap();
    let children =
        std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children")).unwrap();
    let agent_pid: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent_pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = agent.wait_exit(Duration::from_secs(15)).unwrap();
    assert!(
        std::fs::metadata(format!("/proc/{agent_pid}")).is_err()
            || std::fs::read_to_string(format!("/proc/{agent_pid}/comm"))
                .unwrap_or_default()
                .trim()
                != "hearth-agent",
        "agent still running after SIGTERM ({status:?})"
    );
}

#[tokio::test]
#[ignore = "needs root (unshare --pid); run with --run-ignored (scripts/test does, as root)"]
async fn pid1_init_sets_hostname_and_clock() {
    require_root("unshare --pid");
    // A UTS namespace of its own, so the hostname change stays in it. The
    // clock is not namespaced: it is set to the current time, a no-op.
    let mut wrapper = UNSHARE.to_vec();
    wrapper.insert(1, "--uts");
    let agent = AgentProcess::start_wrapped(&wrapper, AGENT.as_ref(), &[])
        .await
        .unwrap();
    let c = agent.client();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let r = c
        .init(&hearth_agent_protocol::InitRequest {
            sandbox_id: "sbx_pid1".into(),
            hostname: Some("sbx-pid1".into()),
            clock_unix_ms: Some(now.as_millis() as i64),
            entropy: Some(vec![1u8; 32].into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(r.hostname_set && r.clock_set && r.entropy_added, "{r:?}");
    let out = c
        .exec(&ExecRequest {
            command: "hostname".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(out.stdout.0, b"sbx-pid1\n");
    assert_ne!(
        nix::unistd::gethostname().unwrap(),
        "sbx-pid1",
        "host hostname must not change"
    );
}
