//! Lifecycle calls and the transport, against the real agent binary.
#![allow(clippy::unwrap_used)]

use hearth_agent_protocol::{InitRequest, PROTOCOL_VERSION};
use hearth_test_support::AgentProcess;

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
