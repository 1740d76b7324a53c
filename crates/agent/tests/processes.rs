//! Background processes through the real agent binary.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use hearth_agent_client::AgentClient;
use hearth_agent_protocol::{
    ErrorCode, KillRequest, OutputEvent, ProcessState, StartProcessRequest, StdinRequest,
};
use hearth_test_support::{wait_until, AgentProcess};

const AGENT: &str = env!("CARGO_BIN_EXE_hearth-agent");

fn start(command: &str, name: Option<&str>) -> StartProcessRequest {
    StartProcessRequest {
        command: command.into(),
        name: name.map(Into::into),
        ..Default::default()
    }
}

async fn wait_exited(c: &AgentClient, pid: u32) -> hearth_agent_protocol::ProcessInfo {
    wait_until(Duration::from_secs(10), "process exit", || {
        let c = c.clone();
        async move {
            c.process_get(pid)
                .await
                .ok()
                .filter(|p| p.state == ProcessState::Exited)
        }
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn start_list_get_and_exit_code_kept() {
    let agent = AgentProcess::start(AGENT.as_ref(), &[]).await.unwrap();
    let c = agent.client();
    let p = c
        .process_start(&start("sleep 0.3; exit 7", Some("worker")))
        .await
        .unwrap();
    assert_eq!(p.state, ProcessState::Running);
    assert_eq!(p.name.as_deref(), Some("worker"));
    let listed = c.process_list().await.unwrap();
    assert!(listed
        .iter()
        .any(|x| x.pid == p.pid && x.command == "sleep 0.3; exit 7"));
    let done = wait_exited(&c, p.pid).await;
    assert_eq!(done.exit_code, Some(7));
    assert!(done.exited_at_ms.unwrap() >= done.started_at_ms);
    // Still there later.
    assert_eq!(c.process_get(p.pid).await.unwrap().exit_code, Some(7));
}

#[tokio::test]
async fn stdin_writes_and_eof_reach_the_process() {
    let agent = AgentProcess::start(AGENT.as_ref(), &[]).await.unwrap();
    let c = agent.client();
    let p = c.process_start(&start("tr a-z A-Z", None)).await.unwrap();
    c.process_stdin(
        p.pid,
        &StdinRequest {
            data: Some("hello\n".into()),
            eof: false,
        },
    )
    .await
    .unwrap();
    c.process_stdin(
        p.pid,
        &StdinRequest {
            data: Some("world\n".into()),
            eof: true,
        },
    )
    .await
    .unwrap();
    let done = wait_exited(&c, p.pid).await;
    assert_eq!(done.exit_code, Some(0));
    let logs = c.process_logs(p.pid).await.unwrap();
    assert_eq!(logs.stdout.0, b"HELLO\nWORLD\n");
    let err = c
        .process_stdin(
            p.pid,
            &StdinRequest {
                data: Some("late".into()),
                eof: false,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest));
}

#[tokio::test]
async fn stream_replays_then_follows_and_resumes_without_loss() {
    let agent = AgentProcess::start(AGENT.as_ref(), &[]).await.unwrap();
    let c = agent.client();
    let p = c
        .process_start(&start(
            "for i in 1 2 3 4 5 6; do echo line$i; sleep 0.1; done",
            None,
        ))
        .await
        .unwrap();
    // Read two chunks, then drop the stream like a client that went away.
    let mut s = c.process_stream(p.pid, None).await.unwrap();
    let mut text = String::new();
    let mut next_seq = 0;
    for _ in 0..2 {
        if let OutputEvent::Output { seq, data, .. } = s.next().await.unwrap().unwrap() {
            assert_eq!(seq, next_seq);
            next_seq = seq + 1;
            text.push_str(&String::from_utf8_lossy(&data.0));
        }
    }
    drop(s);
    // Reconnect from where we were.
    let mut s = c.process_stream(p.pid, Some(next_seq)).await.unwrap();
    let mut exit = None;
    while let Some(ev) = s.next().await {
        match ev.unwrap() {
            OutputEvent::Output { seq, data, .. } => {
                assert_eq!(seq, next_seq, "no gap, no duplicate");
                next_seq += 1;
                text.push_str(&String::from_utf8_lossy(&data.0));
            }
            OutputEvent::Exit { exit_code, .. } => exit = Some(exit_code),
            OutputEvent::Dropped { .. } => panic!("nothing was dropped"),
        }
    }
    assert_eq!(text, "line1\nline2\nline3\nline4\nline5\nline6\n");
    assert_eq!(exit, Some(0));
    // A stream opened after exit replays everything and ends.
    let mut s = c.process_stream(p.pid, None).await.unwrap();
    let mut count = 0;
    while let Some(ev) = s.next().await {
        if matches!(ev.unwrap(), OutputEvent::Output { .. }) {
            count += 1;
        }
    }
    assert_eq!(count, 6);
}

#[tokio::test]
async fn ring_buffer_is_bounded_and_reports_drops() {
    let agent = AgentProcess::start(AGENT.as_ref(), &["--process-buffer-bytes", "4096"])
        .await
        .unwrap();
    let c = agent.client();
    let p = c
        .process_start(&start(
            "head -c 100000 /dev/zero | tr '\\0' x; echo END",
            None,
        ))
        .await
        .unwrap();
    wait_exited(&c, p.pid).await;
    let logs = wait_until(Duration::from_secs(5), "output drained", || {
        let c = c.clone();
        async move {
            c.process_logs(p.pid)
                .await
                .ok()
                .filter(|l| l.stdout.0.ends_with(b"END\n"))
        }
    })
    .await
    .unwrap();
    assert!(logs.stdout.0.len() <= 4096);
    assert_eq!(logs.dropped_bytes as usize + logs.stdout.0.len(), 100_004);
    let mut s = c.process_stream(p.pid, None).await.unwrap();
    assert!(
        matches!(s.next().await.unwrap().unwrap(), OutputEvent::Dropped { bytes } if bytes > 0)
    );
}

#[tokio::test]
async fn signal_reaches_the_process_and_bad_signals_are_rejected() {
    let agent = AgentProcess::start(AGENT.as_ref(), &[]).await.unwrap();
    let c = agent.client();
    let p = c
        .process_start(&start(
            "trap 'echo got-int; exit 0' INT; echo ready; while :; do sleep 0.05; done",
            None,
        ))
        .await
        .unwrap();
    wait_until(Duration::from_secs(5), "trap installed", || {
        let c = c.clone();
        async move {
            c.process_logs(p.pid)
                .await
                .ok()
                .filter(|l| l.stdout.0.starts_with(b"ready"))
        }
    })
    .await
    .unwrap();
    let err = c.process_signal(p.pid, "SIGNOTREAL").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidSignal));
    c.process_signal(p.pid, "SIGINT").await.unwrap();
    let done = wait_exited(&c, p.pid).await;
    assert_eq!(done.exit_code, Some(0));
    assert!(
        String::from_utf8_lossy(&c.process_logs(p.pid).await.unwrap().stdout.0).contains("got-int")
    );
    let err = c.process_get(999_999_999).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ProcessNotFound));
    let err = c.process_signal(999_999_999, "TERM").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ProcessNotFound));
}

#[tokio::test]
async fn kill_escalates_to_sigkill_after_the_grace_period() {
    let agent = AgentProcess::start(AGENT.as_ref(), &[]).await.unwrap();
    let c = agent.client();
    let p = c
        .process_start(&start("trap '' TERM; echo ready; sleep 100 & wait", None))
        .await
        .unwrap();
    wait_until(Duration::from_secs(5), "trap installed", || {
        let c = c.clone();
        async move {
            c.process_logs(p.pid)
                .await
                .ok()
                .filter(|l| !l.stdout.0.is_empty())
        }
    })
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let info = c
        .process_kill(
            p.pid,
            &KillRequest {
                grace_ms: Some(300),
            },
        )
        .await
        .unwrap();
    assert_eq!(info.state, ProcessState::Exited);
    assert_eq!(info.signal, Some(9));
    assert!(started.elapsed() >= Duration::from_millis(300));
    // A plain process dies on SIGTERM without waiting for the grace period.
    let p = c.process_start(&start("sleep 100", None)).await.unwrap();
    let started = std::time::Instant::now();
    let info = c
        .process_kill(p.pid, &KillRequest::default())
        .await
        .unwrap();
    assert_eq!(info.signal, Some(15));
    assert!(started.elapsed() < Duration::from_secs(4));
}
