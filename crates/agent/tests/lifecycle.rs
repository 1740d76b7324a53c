//! Lifecycle calls and the transport, against the real agent binary.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use hearth_agent_client::{AgentClient, AgentClientError, Connector};
use hearth_agent_protocol::{
    ErrorCode, ExecRequest, InitRequest, ShutdownRequest, PROTOCOL_VERSION,
};
use hearth_test_support::AgentProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

const AGENT: &str = env!("CARGO_BIN_EXE_hearth-agent");

#[tokio::test]
async fn health_reports_version_and_uptime() {
    let agent = AgentProcess::start(AGENT.as_ref(), &[]).await.unwrap();
    let c = agent.client();
    let h = c.health().await.unwrap();
    assert_eq!(h.protocol_version, PROTOCOL_VERSION);
    assert!(!h.pid1);
    assert_eq!(h.sandbox_id, None);
    let h2 = c.health().await.unwrap();
    assert!(h2.uptime_ms >= h.uptime_ms);
    c.init(&InitRequest {
        sandbox_id: "sbx_1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        c.health().await.unwrap().sandbox_id.as_deref(),
        Some("sbx_1")
    );
}

#[tokio::test]
async fn init_env_applies_to_later_commands_and_request_env_wins() {
    let agent = AgentProcess::start(AGENT.as_ref(), &[]).await.unwrap();
    let c = agent.client();
    let mut env = std::collections::BTreeMap::new();
    env.insert("FROM_INIT".to_string(), "a".to_string());
    env.insert("BOTH".to_string(), "init".to_string());
    let r = c
        .init(&InitRequest {
            sandbox_id: "sbx_env".into(),
            env,
            entropy: Some(vec![7u8; 64].into()),
            hostname: Some("sbx-env".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    // A host-process agent mixes entropy in but leaves hostname alone.
    assert!(r.entropy_added);
    assert!(!r.hostname_set && !r.clock_set);
    let mut req_env = std::collections::BTreeMap::new();
    req_env.insert("BOTH".to_string(), "request".to_string());
    let out = c
        .exec(&ExecRequest {
            command: "echo $FROM_INIT $BOTH".into(),
            env: req_env,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(out.stdout.0, b"a request\n");
    let err = c
        .init(&InitRequest {
            sandbox_id: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest));
    let err = c
        .init(&InitRequest {
            sandbox_id: "x".into(),
            hostname: Some("bad host".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest));
}

#[tokio::test]
async fn a_later_init_keeps_the_values_it_is_told_to_keep() {
    let agent = AgentProcess::start(AGENT.as_ref(), &[]).await.unwrap();
    let c = agent.client();
    let env = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let echo = |c: AgentClient| async move {
        let out = c
            .exec(&ExecRequest {
                command: "echo \"$PLAIN|$SECRET|$GONE\"".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        String::from_utf8(out.stdout.0).unwrap()
    };
    c.init(&InitRequest {
        sandbox_id: "sbx_keep".into(),
        env: env(&[("PLAIN", "1"), ("SECRET", "s3"), ("GONE", "g")]),
        ..Default::default()
    })
    .await
    .unwrap();
    // A restore after a host restart: the host knows the secret's name
    // only. Kept names survive; others follow the new env.
    c.init(&InitRequest {
        sandbox_id: "sbx_keep".into(),
        env: env(&[("PLAIN", "2")]),
        keep_env: vec!["SECRET".into(), "NEVER_SET".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(echo(c.clone()).await, "2|s3|\n");
    // A value sent wins over a kept one; without keep_env it goes.
    c.init(&InitRequest {
        sandbox_id: "sbx_keep".into(),
        env: env(&[("SECRET", "new")]),
        keep_env: vec!["SECRET".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(echo(c.clone()).await, "|new|\n");
    c.init(&InitRequest {
        sandbox_id: "sbx_keep".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(echo(c.clone()).await, "||\n");
}

#[tokio::test]
async fn sync_answers_and_shutdown_stops_the_agent() {
    let mut agent = AgentProcess::start(AGENT.as_ref(), &[]).await.unwrap();
    let c = agent.client();
    let s = c.sync().await.unwrap();
    assert!(s.duration_ms < 30_000);
    c.shutdown(&ShutdownRequest::default()).await.unwrap();
    let status = agent.wait_exit(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status:?}");
    assert!(c.health().await.unwrap_err().is_connection());
}

/// Stands in for Firecracker's vsock device: a Unix socket that expects
/// `CONNECT <port>\n`, answers `OK <n>\n` for `port` (anything else: closes),
/// then splices the connection to the agent's socket.
async fn firecracker_mux(listener: UnixListener, port: u32, agent_sock: std::path::PathBuf) {
    loop {
        let Ok((mut host, _)) = listener.accept().await else {
            return;
        };
        let agent_sock = agent_sock.clone();
        tokio::spawn(async move {
            let mut line = Vec::new();
            loop {
                let b = host.read_u8().await.unwrap();
                if b == b'\n' {
                    break;
                }
                line.push(b);
            }
            if line != format!("CONNECT {port}").into_bytes() {
                return; // Firecracker closes the connection on a bad port
            }
            host.write_all(b"OK 1073741824\n").await.unwrap();
            let mut guest = UnixStream::connect(agent_sock).await.unwrap();
            let _ = tokio::io::copy_bidirectional(&mut host, &mut guest).await;
        });
    }
}

#[tokio::test]
async fn firecracker_vsock_connector_does_the_connect_handshake() {
    let agent = AgentProcess::start(AGENT.as_ref(), &[]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("vsock.sock");
    tokio::spawn(firecracker_mux(
        UnixListener::bind(&uds).unwrap(),
        1024,
        agent.socket.clone(),
    ));
    let c = AgentClient::new(Connector::FirecrackerVsock {
        uds: uds.clone(),
        port: 1024,
    });
    let r = c
        .exec(&ExecRequest {
            command: "echo via-vsock".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.stdout.0, b"via-vsock\n");
    let wrong = AgentClient::new(Connector::FirecrackerVsock { uds, port: 9 });
    let err = wrong.health().await.unwrap_err();
    assert!(matches!(err, AgentClientError::Handshake(_)), "{err:?}");
}
