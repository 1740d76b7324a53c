//! Shared by the agent's file and watch tests: the agent under test, paths
//! as text, agent failures, write requests and test data.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;

use hearth_agent_client::{AgentClientError, ClientResult};
use hearth_agent_protocol::{ErrorCode, WriteFileRequest};
use hearth_test_support::AgentProcess;

pub const AGENT: &str = env!("CARGO_BIN_EXE_hearth-agent");

pub async fn start() -> AgentProcess {
    AgentProcess::start(AGENT.as_ref(), &[]).await.unwrap()
}

pub fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// Status and code of a call that must fail with an agent error.
pub fn failure<T: std::fmt::Debug>(r: ClientResult<T>) -> (u16, ErrorCode) {
    match r {
        Err(AgentClientError::Agent { status, error }) => (status, error.code),
        other => panic!("expected an agent error, got {other:?}"),
    }
}

pub fn write_req(path: &Path, content: &[u8], mode: Option<u32>) -> WriteFileRequest {
    WriteFileRequest {
        path: s(path),
        content: content.into(),
        mode,
    }
}

/// Names in `dir` that are leftover temp files of atomic writes.
pub fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".hearth-tmp-"))
        .collect()
}

/// Deterministic pseudo-random bytes (xorshift64*).
pub fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        out.extend_from_slice(&seed.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}
