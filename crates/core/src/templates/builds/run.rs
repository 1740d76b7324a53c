//! Running one build: queue it behind the build slot, boot its VM from the
//! base (a template snapshot or a built-in image), install packages, run
//! the steps with their output in the build log, start `start_cmd`, wait
//! for `ready_cmd`, and save the VM as the template's next version.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hearth_agent_client::AgentClient;
use hearth_agent_protocol::{
    ExecRequest, OutputEvent, ProcessState, StartProcessRequest, StreamKind, WriteFileRequest,
};
use hearth_vmm::Vm;
use serde_json::json;

use super::log::{BuildLog, LineSplitter, LogLimits};
use super::{build_shape, shell_quote};
use crate::error::{Error, Result};
use crate::events::EventKind;
use crate::ids::new_id;
use crate::model::{BuildRecord, BuildSpec, BuildState, BuildStep, TemplateRecord};
use crate::Core;
use hearth_agent_protocol::error_chain;

/// How long one `ready_cmd` attempt may run.
const READY_ATTEMPT_MS: u64 = 10_000;
/// Output kept of one `ready_cmd` attempt, per stream.
const READY_OUTPUT_BYTES: u64 = 64 * 1024;
/// Pause between `ready_cmd` attempts.
const READY_INTERVAL: Duration = Duration::from_millis(500);

impl Core {
    pub(super) async fn queue_build(
        self: &Arc<Core>,
        template: &TemplateRecord,
        spec: BuildSpec,
    ) -> Result<BuildRecord> {
        let mut b = BuildRecord {
            id: new_id("bld"),
            template_id: template.id.clone(),
            tenant_id: template.tenant_id.clone(),
            version: 0,
            state: BuildState::Queued,
            spec,
            error: None,
            created_at: self.now_ms(),
            started_at: None,
            finished_at: None,
        };
        b.version = {
            let need = crate::quotas::Quotas {
                concurrent_builds: 1,
                ..Default::default()
            };
            let _quota = self.reserve(&b.tenant_id, need).await?;
            self.store.insert_build(&b).await?
        };
        let limits = LogLimits::from(&self.config.builds);
        let log =
            Arc::new(BuildLog::create(&self.build_log_path(&b), limits).map_err(Error::internal)?);
        log.push(
            self.now_ms(),
            "system",
            &format!(
                "queued build {} of template {} version {}",
                b.id, template.name, b.version
            ),
        );
        self.builds.logs.lock().insert(b.id.clone(), log.clone());
        let core = self.clone();
        let queued = b.clone();
        tokio::spawn(async move { core.run_queued(queued, log).await });
        Ok(b)
    }

    /// Waits for the build slot, runs the build, and records how it ended.
    async fn run_queued(self: Arc<Core>, mut b: BuildRecord, log: Arc<BuildLog>) {
        let shutdown = self.shutdown_token();
        let permit = tokio::select! {
            p = self.builds.slot.acquire(&b.tenant_id) => Some(p),
            _ = shutdown.cancelled() => None,
        };
        let result = match permit {
            None => Err("the server shut down before the build started".to_string()),
            Some(_permit) => {
                log.start();
                b.state = BuildState::Building;
                b.started_at = Some(self.now_ms());
                match self.store.update_build(&b).await {
                    Ok(()) => self.run_build(&mut b, &log).await,
                    Err(e) => Err(format!("store: {}", error_chain(&e))),
                }
            }
        };
        b.finished_at = Some(self.now_ms());
        let kind = match &result {
            Ok(()) => {
                b.state = BuildState::Ready;
                EventKind::TemplateBuildReady
            }
            Err(e) => {
                b.state = BuildState::Failed;
                b.error = Some(e.clone());
                log.push(self.now_ms(), "system", &format!("build failed: {e}"));
                EventKind::TemplateBuildFailed
            }
        };
        if let Err(e) = self.store.update_build(&b).await {
            tracing::error!(build_id = %b.id, error = %error_chain(&e), "build state not stored");
        }
        log.finish();
        self.builds.logs.lock().remove(&b.id);
        tracing::info!(build_id = %b.id, template_id = %b.template_id, version = b.version, state = b.state.as_str(), "template build finished");
        self.events
            .emit_logged(
                &b.tenant_id,
                None,
                kind,
                json!({
                    "template_id": b.template_id,
                    "build_id": b.id,
                    "version": b.version,
                    "error": b.error,
                }),
            )
            .await;
    }

    async fn run_build(&self, b: &mut BuildRecord, log: &BuildLog) -> Result<(), String> {
        let started = Instant::now();
        let spec = b.spec.clone();
        let sys = |msg: String| log.push(self.now_ms(), "system", &msg);
        sys(format!(
            "building from {} with {} vCPU, {} MiB memory, {} MiB disk",
            spec.from, spec.cpu_count, spec.memory_mb, spec.disk_size_mb
        ));
        let base = self
            .resolve_template(&spec.from)
            .await
            .map_err(|e| format!("base template: {}", error_chain(&e)))?;
        let shape = build_shape(&b.template_id, b.version, &spec);
        let vm = match spec.from_version {
            Some(v) => {
                let parent = self.shape_dir(&build_shape(&spec.from, v, &spec));
                sys(format!("restoring {} v{v}", spec.from));
                self.restore_shared(&parent, &base, &shape, &spec.env, true)
                    .await
                    .map_err(|e| format!("restore the base template: {e:#}"))?
            }
            None => self
                .boot_build_vm(&shape, &base, &spec.env, true)
                .await
                .map_err(|e| format!("boot the build VM: {e:#}"))?,
        };
        sys(format!(
            "build VM up in {} ms",
            started.elapsed().as_millis()
        ));
        let limit = Duration::from_secs(self.config.template_build_timeout_sec);
        let shutdown = self.shutdown_token();
        let prepared = tokio::select! {
            r = self.prepare_build_vm(vm.as_ref(), &spec, log) => r,
            _ = shutdown.cancelled() => Err("the server shut down".to_string()),
            _ = tokio::time::sleep(limit) => Err(format!("the build took longer than {} s", limit.as_secs())),
        };
        if let Err(e) = prepared {
            let _ = vm.destroy().await;
            let _ = std::fs::remove_dir_all(&vm.spec().dir);
            return Err(e);
        }
        b.state = BuildState::Snapshotting;
        self.store
            .update_build(b)
            .await
            .map_err(|e| format!("store: {}", error_chain(&e)))?;
        sys("writing the template snapshot".into());
        let snap_started = Instant::now();
        let dir = self
            .snapshot_build_vm(vm, &shape)
            .await
            .map_err(|e| format!("template snapshot: {e:#}"))?;
        let bytes = crate::snapshots::disk_usage(&dir);
        sys(format!(
            "version {} ready: snapshot in {} ms, {} MiB on disk, build took {:.1} s",
            b.version,
            snap_started.elapsed().as_millis(),
            bytes / (1 << 20),
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// Packages, steps, `start_cmd` and `ready_cmd`, in that order.
    async fn prepare_build_vm(
        &self,
        vm: &dyn Vm,
        spec: &BuildSpec,
        log: &BuildLog,
    ) -> Result<(), String> {
        let agent = vm.agent();
        let sys = |msg: String| log.push(self.now_ms(), "system", &msg);
        let user = spec.user.clone();
        let owner = user.clone().unwrap_or_else(|| "sandbox".into());
        let workdir = shell_quote(&spec.workdir);
        let mkdir = format!(
            "if [ ! -d {workdir} ]; then mkdir -p {workdir} && \
             if id {o} >/dev/null 2>&1; then chown {o} {workdir}; fi; fi",
            o = shell_quote(&owner)
        );
        self.run_logged(&agent, &mkdir, None, Some("root"), spec, log)
            .await
            .and_then(|code| match code {
                0 => Ok(()),
                n => Err(format!("creating workdir {} exited with {n}", spec.workdir)),
            })?;
        if !spec.packages.is_empty() {
            sys(format!("installing packages: {}", spec.packages.join(" ")));
            let cmd = format!(
                "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
                 --no-install-recommends {} && apt-get clean",
                spec.packages
                    .iter()
                    .map(|p| shell_quote(p))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            match self
                .run_logged(&agent, &cmd, None, Some("root"), spec, log)
                .await?
            {
                0 => {}
                n => return Err(format!("installing packages exited with {n}")),
            }
        }
        for (i, step) in spec.steps.iter().enumerate() {
            let n = i + 1;
            match step {
                BuildStep::Run(cmd) => {
                    sys(format!("step {n}: run {cmd}"));
                    let code = self
                        .run_logged(&agent, cmd, Some(&spec.workdir), user.as_deref(), spec, log)
                        .await?;
                    if code != 0 {
                        return Err(format!("step {n} ({cmd}) exited with {code}"));
                    }
                }
                BuildStep::Copy(c) => {
                    let path = if c.path.starts_with('/') {
                        c.path.clone()
                    } else {
                        format!("{}/{}", spec.workdir.trim_end_matches('/'), c.path)
                    };
                    let content = base64::engine::general_purpose::STANDARD
                        .decode(&c.content_base64)
                        .map_err(|e| format!("step {n}: content_base64: {e}"))?;
                    let len = content.len();
                    agent
                        .write_file(&WriteFileRequest {
                            path: path.clone(),
                            content: content.into(),
                            mode: c.mode,
                        })
                        .await
                        .map_err(|e| format!("step {n}: copy to {path}: {}", error_chain(&e)))?;
                    sys(format!("step {n}: copied {len} bytes to {path}"));
                }
            }
        }
        let start_pid = match &spec.start_cmd {
            Some(cmd) => {
                let p = agent
                    .process_start(&StartProcessRequest {
                        command: cmd.clone(),
                        name: Some("start_cmd".into()),
                        cwd: Some(spec.workdir.clone()),
                        env: spec.env.clone(),
                        user: user.clone(),
                    })
                    .await
                    .map_err(|e| format!("start_cmd: {}", error_chain(&e)))?;
                sys(format!("start_cmd running as pid {}: {cmd}", p.pid));
                Some(p.pid)
            }
            None => None,
        };
        if let Some(ready) = &spec.ready_cmd {
            self.wait_ready(&agent, ready, start_pid, spec, log).await?;
        }
        Ok(())
    }

    /// Runs `ready_cmd` until it exits 0; fails when `start_cmd` dies or
    /// the spec's `ready_timeout_sec` passes, with both outputs in the log.
    async fn wait_ready(
        &self,
        agent: &AgentClient,
        ready: &str,
        start_pid: Option<u32>,
        spec: &BuildSpec,
        log: &BuildLog,
    ) -> Result<(), String> {
        let sys = |msg: String| log.push(self.now_ms(), "system", &msg);
        sys(format!("waiting for ready_cmd: {ready}"));
        let started = Instant::now();
        let limit = Duration::from_secs(u64::from(spec.ready_timeout_sec));
        let req = ExecRequest {
            command: ready.to_string(),
            cwd: Some(spec.workdir.clone()),
            env: spec.env.clone(),
            user: spec.user.clone(),
            timeout_ms: Some(READY_ATTEMPT_MS),
            // Only the last attempt's output is logged: a chatty
            // ready_cmd's first 64 KiB say why it fails as well as all of
            // it would.
            max_output_bytes: Some(READY_OUTPUT_BYTES),
            ..Default::default()
        };
        let mut attempts = 0u32;
        let mut last;
        let failure = loop {
            attempts += 1;
            match agent.exec(&req).await {
                Ok(r) if r.exit_code == 0 => {
                    sys(format!(
                        "ready after {attempts} attempt(s), {} ms",
                        started.elapsed().as_millis()
                    ));
                    return Ok(());
                }
                Ok(r) => {
                    last = format!(
                        "exit {}: {}{}",
                        r.exit_code,
                        String::from_utf8_lossy(&r.stdout.0),
                        String::from_utf8_lossy(&r.stderr.0)
                    );
                }
                Err(e) => last = error_chain(&e),
            }
            if let Some(pid) = start_pid {
                if let Ok(p) = agent.process_get(pid).await {
                    if p.state == ProcessState::Exited {
                        break format!(
                            "start_cmd exited with {} before ready_cmd succeeded",
                            p.exit_code.map_or("a signal".into(), |c| c.to_string())
                        );
                    }
                }
            }
            if started.elapsed() >= limit {
                break format!(
                    "ready_cmd did not succeed within {} s ({attempts} attempts)",
                    spec.ready_timeout_sec
                );
            }
            tokio::time::sleep(READY_INTERVAL).await;
        };
        sys(format!("last ready_cmd attempt: {}", last.trim_end()));
        if let Some(pid) = start_pid {
            if let Ok(out) = agent.process_logs(pid).await {
                sys("start_cmd output:".into());
                log.push(
                    self.now_ms(),
                    "stdout",
                    &String::from_utf8_lossy(&out.stdout.0),
                );
                log.push(
                    self.now_ms(),
                    "stderr",
                    &String::from_utf8_lossy(&out.stderr.0),
                );
            }
        }
        Err(failure)
    }

    /// Runs `cmd` with its output streamed into the log; its exit code.
    async fn run_logged(
        &self,
        agent: &AgentClient,
        cmd: &str,
        cwd: Option<&str>,
        user: Option<&str>,
        spec: &BuildSpec,
        log: &BuildLog,
    ) -> Result<i32, String> {
        let req = ExecRequest {
            command: cmd.to_string(),
            cwd: cwd.map(str::to_string),
            env: spec.env.clone(),
            user: user.map(str::to_string),
            ..Default::default()
        };
        let mut stream = agent
            .exec_stream(&req)
            .await
            .map_err(|e| format!("run {cmd}: {}", error_chain(&e)))?;
        let mut lines = LineSplitter::default();
        let mut code = None;
        while let Some(ev) = stream.next().await {
            match ev.map_err(|e| format!("run {cmd}: {}", error_chain(&e)))? {
                OutputEvent::Output { stream, data, .. } => {
                    let name = match stream {
                        StreamKind::Stdout => "stdout",
                        StreamKind::Stderr => "stderr",
                    };
                    if let Some(text) = lines.feed(name, &data.0) {
                        log.push(self.now_ms(), name, &text);
                    }
                }
                OutputEvent::Dropped { .. } => {}
                OutputEvent::Exit { exit_code, .. } => code = Some(exit_code),
            }
        }
        for (name, text) in lines.flush() {
            log.push(self.now_ms(), &name, &text);
        }
        code.ok_or_else(|| format!("run {cmd}: the output stream ended without an exit"))
    }

    /// Builds that were running when the server stopped cannot go on.
    pub(crate) async fn fail_interrupted_builds(&self) {
        match self
            .store
            .fail_unfinished_builds("the server restarted during the build", self.now_ms())
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                builds = n,
                "template builds interrupted by a restart failed"
            ),
            Err(e) => tracing::error!(error = %error_chain(&e), "interrupted builds not marked"),
        }
    }
}
