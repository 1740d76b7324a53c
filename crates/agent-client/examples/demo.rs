//! A tour of the agent API against a running agent: `demo SOCKET`.

use std::time::Instant;

use hearth_agent_client::{AgentClient, Connector};
use hearth_agent_protocol::{ExecRequest, InitRequest, OutputEvent, WriteFileRequest};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let socket = std::env::args().nth(1).ok_or("usage: demo SOCKET")?;
    let client = AgentClient::new(Connector::Unix(socket.into()));
    let t = Instant::now();
    let health = wait_for_agent(&client).await?;
    println!(
        "agent {} (protocol {}) answered in {:?}",
        health.agent_version,
        health.protocol_version,
        t.elapsed()
    );
    client
        .init(&InitRequest {
            sandbox_id: "sbx_demo".into(),
            ..Default::default()
        })
        .await?;

    let r = client
        .exec(&ExecRequest {
            command: "python3 -c 'import sys, platform; print(\"hello from python\", platform.python_version())'".into(),
            ..Default::default()
        })
        .await?;
    print!(
        "exec -> exit {} in {} ms: {}",
        r.exit_code,
        r.duration_ms,
        String::from_utf8_lossy(&r.stdout.0)
    );

    let cwd = client
        .exec(&ExecRequest {
            command: "pwd".into(),
            ..Default::default()
        })
        .await?;
    let path = format!(
        "{}/hello.txt",
        String::from_utf8_lossy(&cwd.stdout.0).trim()
    );
    client
        .write_file(&WriteFileRequest {
            path: path.clone(),
            content: "written through the agent\n".into(),
            mode: None,
        })
        .await?;
    let back = client.read_file_bytes(&path).await?;
    print!("file {path} -> {}", String::from_utf8_lossy(&back));

    println!("streaming exec:");
    let mut s = client
        .exec_stream(&ExecRequest {
            command: "for i in 1 2 3; do echo tick $i; sleep 0.2; done".into(),
            ..Default::default()
        })
        .await?;
    while let Some(ev) = s.next().await {
        match ev? {
            OutputEvent::Output { data, .. } => print!("  {}", String::from_utf8_lossy(&data.0)),
            OutputEvent::Exit {
                exit_code,
                duration_ms,
                ..
            } => println!("  exit {exit_code} after {duration_ms} ms"),
            OutputEvent::Dropped { .. } => {}
        }
    }
    println!("demo done");
    Ok(())
}

/// The agent was just started: wait for its socket.
async fn wait_for_agent(
    c: &AgentClient,
) -> Result<hearth_agent_protocol::HealthResponse, Box<dyn std::error::Error>> {
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match c.health().await {
            Ok(h) => return Ok(h),
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
}
