//! Commands: one-shot exec (whole answer or streamed output) and the
//! `sandbox.exec.started` / `sandbox.exec.completed` events around them.

use std::time::Instant;

use hearth_agent_client::NdjsonStream;
use hearth_agent_protocol::{Base64Bytes, ExecRequest, ExecResult, OutputEvent};
use serde_json::json;

use super::Guest;
use crate::error::{Error, Result};
use crate::events::EventKind;

impl Guest {
    /// Runs `req` to the end and answers with all of its output.
    pub async fn exec(&self, req: &ExecRequest) -> Result<ExecResult> {
        let started = Instant::now();
        let mut req = req.clone();
        let redactor = self.with_vault(&mut req.env).await?;
        self.emit(EventKind::ExecStarted, json!({ "command": req.command }))
            .await;
        let mut r = self.agent.exec(&req).await?;
        if !redactor.is_empty() {
            r.stdout = Base64Bytes(redactor.redact(r.stdout.0));
            r.stderr = Base64Bytes(redactor.redact(r.stderr.0));
        }
        self.core
            .metrics
            .exec
            .observe_ms(started.elapsed().as_secs_f64() * 1000.0);
        self.emit(
            EventKind::ExecCompleted,
            json!({ "exit_code": r.exit_code, "duration_ms": r.duration_ms, "timed_out": r.timed_out }),
        )
        .await;
        Ok(r)
    }

    /// Starts `req` and streams its output; the completion event is
    /// emitted when the exit frame passes through the returned stream.
    pub async fn exec_stream(&self, req: &ExecRequest) -> Result<Output> {
        let mut req = req.clone();
        let redactor = self.with_vault(&mut req.env).await?;
        let frames = self.agent.exec_stream(&req).await?;
        self.emit(
            EventKind::ExecStarted,
            json!({ "command": req.command, "stream": true }),
        )
        .await;
        Ok(Output {
            frames,
            exec: Some((self.clone(), Instant::now())),
            redactor,
        })
    }

    /// A background process's output from `from_seq` on (what the agent
    /// still holds), then live until it exits.
    pub async fn process_output(&self, pid: u32, from_seq: Option<u64>) -> Result<Output> {
        Ok(Output {
            frames: self.agent.process_stream(pid, from_seq).await?,
            exec: None,
            redactor: self.vault().await?.redactor,
        })
    }
}

/// Output frames of a command, ending with its exit frame.
#[derive(Debug)]
pub struct Output {
    frames: NdjsonStream<OutputEvent>,
    /// For an exec: who to report its completion to, and since when.
    exec: Option<(Guest, Instant)>,
    /// Masks the vault's values in each chunk (a value split across two
    /// chunks is not caught).
    redactor: crate::secrets::Redactor,
}

impl Output {
    /// The next frame, or `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<Result<OutputEvent>> {
        let mut ev = match self.frames.next().await? {
            Ok(ev) => ev,
            Err(e) => return Some(Err(Error::from(e))),
        };
        if let OutputEvent::Output { data, .. } = &mut ev {
            if !self.redactor.is_empty() {
                data.0 = self.redactor.redact(std::mem::take(&mut data.0));
            }
        }
        if let OutputEvent::Exit {
            exit_code,
            timed_out,
            duration_ms,
            ..
        } = &ev
        {
            if let Some((guest, started)) = self.exec.take() {
                guest
                    .core
                    .metrics
                    .exec
                    .observe_ms(started.elapsed().as_secs_f64() * 1000.0);
                guest
                    .emit(
                        EventKind::ExecCompleted,
                        json!({ "exit_code": exit_code, "duration_ms": duration_ms, "timed_out": timed_out }),
                    )
                    .await;
            }
        }
        Some(Ok(ev))
    }
}
