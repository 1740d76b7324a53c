//! VM benchmarks of the QEMU driver, each printed as a ratio against a
//! floor measured in the same run:
//!
//! 1. fast clone to first exec answered vs cold boot to first exec answered;
//! 2. our fast clone vs a hand-scripted raw QEMU clone of the same files
//!    (spawn with `-incoming defer`, bare QMP `migrate-incoming exec:cat`
//!    and `cont`, a raw hello probe, then the same exec);
//! 3. full snapshot and restore wall times of a 256 MiB VM (vs QEMU's own
//!    migrate / incoming time inside them);
//! 4. host RSS of an idle restored 1 GiB VM (vs the same VM cold booted);
//! 5. host CPU of that idle VM (vs the same VM paused: QEMU alone);
//! 6. pause to disk + resume of a 256 MiB VM to an answered exec (vs the
//!    same VM's arguments driven by hand: QMP stop, migrate to a file,
//!    quit, a new QEMU with `-incoming`, cont, hello, exec).
//!
//! `cargo run --release -p hearth-vmm --example vm_bench [-- ROUNDS]`.
//! Artifacts come from `hearth-image` (or `HEARTH_TEST_{KERNEL,INITRD,BASE}`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hearth_agent_client::{AgentClient, Connector};
use hearth_agent_protocol::ExecRequest;
use hearth_vmm::{AfterSnapshot, MemoryBacking, QemuVm, QemuVmm, SnapshotOptions, VmSpec};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn exec_true(agent: &AgentClient) -> Result<()> {
    let r = agent
        .exec(&ExecRequest {
            command: "true".into(),
            ..Default::default()
        })
        .await?;
    anyhow::ensure!(r.exit_code == 0, "true exited {}", r.exit_code);
    Ok(())
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

/// What the floor needs of the QEMU driver's `manifest.json`, read as a
/// file the way someone scripting QEMU by hand would.
#[derive(serde::Deserialize)]
struct RawManifest {
    spec: VmSpec,
    vmm_args: Vec<String>,
}

/// The floor of a clone: the same files and arguments driven by hand, with
/// QEMU loading the state itself and the least QMP that starts the guest.
async fn raw_clone(snap: &Path, dir: &Path) -> Result<(u32, Duration)> {
    let manifest: RawManifest =
        serde_json::from_slice(&std::fs::read(snap.join("manifest.json"))?)?;
    let started = Instant::now();
    std::fs::create_dir_all(dir)?;
    let old_dir = manifest.spec.dir.display().to_string();
    let new_dir = dir.display().to_string();
    let disk = dir.join("disk.ext4");
    let snap_disk = snap.join("disk.ext4");
    let disk2 = disk.clone();
    tokio::task::spawn_blocking(move || hearth_vmm::snapshot::sparse_copy(&snap_disk, &disk2))
        .await??;
    // The floor is QEMU alone: no seccomp filter (its `exec:` migration
    // spawns `cat`, which the jail's filter forbids).
    let mut args: Vec<String> = without_flags(&manifest.vmm_args, &["-sandbox"])
        .into_iter()
        .map(|a| {
            if a.starts_with("memory-backend-file") {
                format!(
                    "memory-backend-file,id=mem,mem-path={},size={}M,share=off",
                    snap.join("memory.ram").display(),
                    manifest.spec.memory_mb
                )
            } else {
                a.replace(
                    &manifest.spec.disk.display().to_string(),
                    &disk.display().to_string(),
                )
                .replace(&old_dir, &new_dir)
            }
        })
        .collect();
    args.extend(["-incoming".into(), "defer".into()]);
    let child = std::process::Command::new("qemu-system-x86_64")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(dir.join("vmm.log"))?)
        .stderr(std::fs::File::create(dir.join("vmm.err"))?)
        .spawn()?;
    let pid = child.id();
    let qmp_path = dir.join("qmp.sock");
    let stream = loop {
        if let Ok(s) = tokio::net::UnixStream::connect(&qmp_path).await {
            break s;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(20), "no qmp socket");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    lines.next_line().await?; // greeting
    let incoming = format!(
        "{{\"execute\":\"qmp_capabilities\"}}\n\
         {{\"execute\":\"migrate-set-capabilities\",\"arguments\":{{\"capabilities\":[{{\"capability\":\"x-ignore-shared\",\"state\":true}}]}}}}\n\
         {{\"execute\":\"migrate-incoming\",\"arguments\":{{\"uri\":\"exec:cat {}\"}}}}\n",
        snap.join("state.bin").display()
    );
    w.write_all(incoming.as_bytes()).await?;
    for _ in 0..3 {
        let mut reply;
        loop {
            reply = lines.next_line().await?.context("qmp closed")?;
            if reply.contains("\"return\"") || reply.contains("\"error\"") {
                break;
            }
        }
        anyhow::ensure!(!reply.contains("\"error\""), "qmp: {reply}");
    }
    loop {
        w.write_all(b"{\"execute\":\"query-status\"}\n").await?;
        let mut reply;
        loop {
            reply = lines.next_line().await?.context("qmp closed")?;
            if reply.contains("\"return\"") {
                break;
            }
        }
        if !reply.contains("inmigrate") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    w.write_all(b"{\"execute\":\"cont\"}\n").await?;
    // The floor gets the same fast hello probe the driver uses, so the
    // ratio measures the driver, not the client's 250 ms hello cadence.
    raw_probe(&dir.join("agent.sock")).await?;
    let agent = AgentClient::new(Connector::Unix(dir.join("agent.sock")));
    exec_true(&agent).await?;
    let took = started.elapsed();
    drop(w);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let mut child = child;
    let _ = child.wait();
    Ok((pid, took))
}

/// `args` without each of `flags` and the value that follows it.
fn without_flags(args: &[String], flags: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if flags.contains(&a.as_str()) {
            it.next();
            continue;
        }
        out.push(a.clone());
    }
    out
}

type QmpLines = tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>;
type QmpWriter = tokio::net::unix::OwnedWriteHalf;

/// Starts QEMU by hand with `args` and opens its QMP socket in `dir`.
async fn raw_spawn(
    args: &[String],
    dir: &Path,
) -> Result<(std::process::Child, QmpLines, QmpWriter)> {
    let started = Instant::now();
    let child = std::process::Command::new("qemu-system-x86_64")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(dir.join("vmm.log"))?)
        .stderr(std::fs::File::create(dir.join("vmm.err"))?)
        .spawn()?;
    let qmp_path = dir.join("qmp.sock");
    let stream = loop {
        if let Ok(s) = tokio::net::UnixStream::connect(&qmp_path).await {
            break s;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(20), "no qmp socket");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let (r, w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    lines.next_line().await.context("qmp greeting")?;
    let mut w = w;
    raw_qmp(&mut lines, &mut w, "{\"execute\":\"qmp_capabilities\"}").await?;
    Ok((child, lines, w))
}

/// One QMP command by hand; its `return` line.
async fn raw_qmp(lines: &mut QmpLines, w: &mut QmpWriter, cmd: &str) -> Result<String> {
    w.write_all(format!("{cmd}\n").as_bytes())
        .await
        .with_context(|| format!("qmp {cmd}"))?;
    loop {
        let reply = lines
            .next_line()
            .await
            .with_context(|| format!("qmp {cmd}"))?
            .context("qmp closed")?;
        anyhow::ensure!(!reply.contains("\"error\""), "qmp {cmd}: {reply}");
        if reply.contains("\"return\"") {
            return Ok(reply);
        }
    }
}

/// The floor of pause + resume: the same VM arguments driven by hand.
/// Boots a VM (not timed), then times QMP stop, migrate to a file, quit;
/// a new QEMU with `-incoming defer`, migrate-incoming from the file, cont,
/// the agent answering a hello, and an exec.
async fn raw_pause_resume(
    vm_args: &[String],
    old: &VmSpec,
    dir: &Path,
) -> Result<(Vec<u32>, Duration)> {
    std::fs::create_dir_all(dir)?;
    let old_dir = old.dir.display().to_string();
    let disk = dir.join("disk.ext4");
    hearth_image::create_sparse_ext4(&disk, 256)?;
    let args: Vec<String> = vm_args
        .iter()
        .map(|a| {
            a.replace(&old.disk.display().to_string(), &disk.display().to_string())
                .replace(&old_dir, &dir.display().to_string())
        })
        .collect();
    let (mut first, mut lines, mut w) = raw_spawn(&args, dir).await?;
    let mut pids = vec![first.id()];
    raw_probe(&dir.join("agent.sock"))
        .await
        .context("probe of the raw boot")?;
    exec_true(&AgentClient::new(Connector::Unix(dir.join("agent.sock"))))
        .await
        .context("exec on the raw boot")?;

    let state = dir.join("state.bin");
    let started = Instant::now();
    raw_qmp(&mut lines, &mut w, "{\"execute\":\"stop\"}").await?;
    raw_qmp(
        &mut lines,
        &mut w,
        &format!(
            "{{\"execute\":\"migrate\",\"arguments\":{{\"uri\":\"exec:cat > {}\"}}}}",
            state.display()
        ),
    )
    .await?;
    loop {
        let r = raw_qmp(&mut lines, &mut w, "{\"execute\":\"query-migrate\"}").await?;
        if r.contains("\"completed\"") {
            break;
        }
        anyhow::ensure!(!r.contains("\"failed\""), "migrate failed: {r}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    std::fs::File::open(&state)?.sync_all()?;
    let _ = first.kill();
    let _ = first.wait();
    drop((lines, w));
    let _ = std::fs::remove_file(dir.join("qmp.sock"));
    let _ = std::fs::remove_file(dir.join("agent.sock"));

    let mut incoming = args.clone();
    incoming.extend(["-incoming".into(), "defer".into()]);
    let (mut second, mut lines, mut w) = raw_spawn(&incoming, dir).await?;
    pids.push(second.id());
    raw_qmp(
        &mut lines,
        &mut w,
        &format!(
            "{{\"execute\":\"migrate-incoming\",\"arguments\":{{\"uri\":\"exec:cat {}\"}}}}",
            state.display()
        ),
    )
    .await?;
    loop {
        let r = raw_qmp(&mut lines, &mut w, "{\"execute\":\"query-status\"}").await?;
        if !r.contains("inmigrate") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    raw_qmp(&mut lines, &mut w, "{\"execute\":\"cont\"}").await?;
    raw_probe(&dir.join("agent.sock"))
        .await
        .context("probe after the raw resume")?;
    exec_true(&AgentClient::new(Connector::Unix(dir.join("agent.sock"))))
        .await
        .context("exec after the raw resume")?;
    let took = started.elapsed();
    let _ = second.kill();
    let _ = second.wait();
    Ok((pids, took))
}

/// Hellos every 10 ms on a raw connection until one is answered.
async fn raw_probe(sock: &Path) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let mut s = tokio::net::UnixStream::connect(sock).await?;
    let mut buf = [0u8; 1024];
    let mut seen = String::new();
    for gen in 1u64.. {
        s.write_all(
            format!(
                "HEARTH-HELLO {gen} {}\n",
                hearth_agent_protocol::PROTOCOL_VERSION
            )
            .as_bytes(),
        )
        .await?;
        let until = tokio::time::Instant::now() + Duration::from_millis(10);
        while let Ok(n) = tokio::time::timeout_at(until, s.read(&mut buf)).await {
            let n = n?;
            anyhow::ensure!(n > 0, "agent socket closed");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if seen.contains("HEARTH-READY ") {
                return Ok(());
            }
        }
    }
    unreachable!("the loop above only ends by returning")
}

async fn boot(vmm: &QemuVmm, sb: &common::Sandboxes, spec: VmSpec) -> Result<QemuVm> {
    let vm = vmm.boot_vm(spec).await?;
    sb.track(vm.pid());
    Ok(vm)
}

#[tokio::main]
async fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(3);
    let vmm = common::driver();
    let sb = common::Sandboxes::new();
    println!("accel: {}, rounds: {rounds}", vmm.accel());

    // 1. cold boot to first exec answered.
    let mut cold = Vec::new();
    for i in 0..rounds {
        let t = Instant::now();
        let vm = boot(&vmm, &sb, sb.spec(&format!("cold{i}"))).await?;
        exec_true(&vm.agent()).await?;
        cold.push(ms(t.elapsed()));
        vm.destroy().await?;
    }

    // Template for the clones.
    let mut spec = sb.spec("template");
    spec.memory = MemoryBacking::SharedFile;
    let vm = boot(&vmm, &sb, spec).await?;
    exec_true(&vm.agent()).await?;
    let snap = sb.path().join("template-snap");
    vm.snapshot(&snap, SnapshotOptions::template().then(AfterSnapshot::Exit))
        .await?;
    vm.destroy().await?;

    let mut fast = Vec::new();
    let mut raw = Vec::new();
    for i in 0..rounds {
        let t = Instant::now();
        let c = vmm
            .restore_vm(&snap, sb.restore_spec(&format!("clone{i}")))
            .await?;
        sb.track(c.pid());
        exec_true(&c.agent()).await?;
        fast.push(ms(t.elapsed()));
        c.destroy().await?;

        let dir = sb.path().join(format!("raw{i}"));
        let (pid, took) = raw_clone(&snap, &dir).await.with_context(|| {
            format!(
                "raw clone; qemu said: {}",
                std::fs::read_to_string(dir.join("vmm.err")).unwrap_or_default()
            )
        })?;
        sb.track(pid);
        raw.push(ms(took));
        std::fs::remove_dir_all(&dir)?;
    }
    let worst = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    println!(
        "worst: cold {:.0} ms, fast clone {:.0} ms, raw clone {:.0} ms",
        worst(&cold),
        worst(&fast),
        worst(&raw)
    );
    let (cold_m, fast_m, raw_m) = (median(cold), median(fast), median(raw));
    println!(
        "cold boot -> exec answered: p50 {cold_m:.0} ms; fast clone -> exec answered: p50 {fast_m:.0} ms; ratio fast/cold = {:.3}",
        fast_m / cold_m
    );
    println!(
        "raw qemu clone -> exec answered (floor): p50 {raw_m:.0} ms; ratio ours/raw = {:.2}",
        fast_m / raw_m
    );

    // 3. Full snapshot + restore of a 256 MiB VM.
    let mut spec = sb.spec("full256");
    spec.memory_mb = 256;
    let vm = boot(&vmm, &sb, spec).await?;
    exec_true(&vm.agent()).await?;
    let snap256 = sb.path().join("snap256");
    let t = Instant::now();
    let info = vm.snapshot(&snap256, SnapshotOptions::full()).await?;
    let snap_ms = ms(t.elapsed());
    vm.destroy().await?;
    let t = Instant::now();
    let r = vmm
        .restore_vm(&snap256, sb.restore_spec("restored256"))
        .await?;
    sb.track(r.pid());
    exec_true(&r.agent()).await?;
    let restore_ms = ms(t.elapsed());
    r.destroy().await?;
    println!(
        "full snapshot 256 MiB: {snap_ms:.0} ms wall (qemu migrate {} ms inside; ratio {:.2}), state {} MiB",
        info.timings.migrate_ms,
        snap_ms / info.timings.migrate_ms.max(1) as f64,
        info.summary.state_bytes >> 20
    );
    println!("full restore 256 MiB -> exec answered: {restore_ms:.0} ms wall");

    // 4. RSS of an idle restored 1 GiB VM vs the same VM cold booted.
    let mut spec = sb.spec("big");
    spec.memory_mb = 1024;
    let vm = boot(&vmm, &sb, spec).await?;
    exec_true(&vm.agent()).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cold_rss = rss_kib(vm.pid())?;
    let snap1g = sb.path().join("snap1g");
    vm.snapshot(&snap1g, SnapshotOptions::full().then(AfterSnapshot::Exit))
        .await?;
    vm.destroy().await?;
    let mut spec = sb.restore_spec("big-restored");
    spec.memory_mb = 1024;
    let r = vmm.restore_vm(&snap1g, spec).await?;
    sb.track(r.pid());
    exec_true(&r.agent()).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restored_rss = rss_kib(r.pid())?;
    println!(
        "idle 1 GiB VM host RSS: restored {} MiB, cold booted {} MiB (ratio {:.2})",
        restored_rss >> 10,
        cold_rss >> 10,
        restored_rss as f64 / cold_rss as f64
    );

    // 5. Host CPU of that idle VM vs the same VM paused (its vCPU stopped:
    // what QEMU's own loop costs, the floor no guest change can go under).
    let window = Duration::from_secs(20);
    let idle = cpu_ms_per_s(r.pid(), window).await?;
    r.pause().await?;
    let paused = cpu_ms_per_s(r.pid(), window).await?;
    r.resume().await?;
    r.destroy().await?;
    // QEMU alone usually rounds to 0 (10 ms clock ticks): then the ratio
    // has no floor to stand on and the guest's share is the number.
    let ratio = if paused >= 0.5 {
        format!("{:.1}", idle / paused)
    } else {
        "n/a (floor under 0.5)".into()
    };
    println!(
        "idle 1 GiB VM host CPU: {idle:.1} ms/s; paused (QEMU alone) {paused:.1} ms/s; the guest's share {:.1} ms/s; ratio {ratio}",
        idle - paused
    );

    // 3b. Pause (to disk, VMM exits) + resume of a 256 MiB VM vs the same
    // done by hand with raw QEMU and QMP.
    let mut ours = Vec::new();
    let mut floor = Vec::new();
    for i in 0..rounds {
        let spec = sb.spec(&format!("pr{i}"));
        let vm = boot(&vmm, &sb, spec.clone()).await?;
        exec_true(&vm.agent()).await?;
        let snap = sb.path().join(format!("pr{i}-snap"));
        let t = Instant::now();
        vm.snapshot(&snap, SnapshotOptions::full().then(AfterSnapshot::Exit))
            .await?;
        vm.destroy().await?;
        let r = vmm
            .restore_vm(&snap, sb.restore_spec(&format!("pr{i}")))
            .await?;
        sb.track(r.pid());
        exec_true(&r.agent()).await?;
        ours.push(ms(t.elapsed()));
        let args = r.vmm_args().to_vec();
        let restored_spec = r.spec().clone();
        r.destroy().await?;
        // The floor runs the arguments of a cold boot of the same VM: no
        // `-incoming`, the whole kernel (a restore names its stub), and no
        // `-sandbox` (as `raw_clone`: the driver passes descriptors, the
        // floor migrates through `exec:cat`).
        let mut args = without_flags(&args, &["-incoming", "-sandbox"]);
        if let Some(k) = args.iter().position(|a| a == "-kernel") {
            args[k + 1] = restored_spec.kernel.display().to_string();
        }
        let dir = sb.path().join(format!("rawpr{i}"));
        let (pids, took) = raw_pause_resume(&args, &restored_spec, &dir)
            .await
            .with_context(|| {
                format!(
                    "raw pause/resume; qemu said: {}",
                    std::fs::read_to_string(dir.join("vmm.err")).unwrap_or_default()
                )
            })?;
        for p in pids {
            sb.track(p);
        }
        floor.push(ms(took));
        std::fs::remove_dir_all(&dir)?;
    }
    let (ours_m, floor_m) = (median(ours), median(floor));
    println!(
        "pause + resume 256 MiB -> exec answered: p50 {ours_m:.0} ms; raw qemu migrate-to-file + -incoming: p50 {floor_m:.0} ms; ratio {:.2} (target <= 1.2)",
        ours_m / floor_m
    );
    Ok(())
}

/// CPU the process uses over `window`, in ms per second (user + system).
async fn cpu_ms_per_s(pid: u32, window: Duration) -> Result<f64> {
    let ticks = || -> Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<u64> = after
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        Ok(f[11] + f[12])
    };
    let (t0, started) = (ticks()?, Instant::now());
    tokio::time::sleep(window).await;
    // Clock ticks are 10 ms (USER_HZ 100).
    Ok((ticks()? - t0) as f64 * 10.0 / started.elapsed().as_secs_f64())
}
