//! What the jail costs, as ratios against the same VMs unjailed, measured
//! in one run (the unjailed VM is the floor):
//!
//! 1. create to first exec: a fast clone of a template snapshot until its
//!    first exec is answered. Jailed adds the network namespace, veth,
//!    nftables chain, cgroup, mount namespace, uid switch and seccomp.
//!    Target: p50 ratio <= 1.1.
//! 2. guest to stand-in internet throughput: 32 MiB over TCP from the
//!    [`NetLab`]'s server into the guest. Jailed goes through the namespace,
//!    the veth, the filter and NAT; unjailed QEMU talks to the lab straight
//!    from the host. Target: median ratio >= 0.8.
//!
//! `cargo run --release -p hearth-vmm --example jail_bench [-- ROUNDS]`, as
//! root. Artifacts come from `hearth-image`, as for the VM tests.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use anyhow::Result;
use hearth_agent_protocol::ExecRequest;
use hearth_test_support::netlab::{self, NetLab};
use hearth_vmm::{AfterSnapshot, JailConfig, MemoryBacking, QemuConfig, QemuVmm, SnapshotOptions};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn exec(agent: &hearth_agent_client::AgentClient, command: &str) -> Result<String> {
    let r = agent
        .exec(&ExecRequest {
            command: command.into(),
            user: Some("root".into()),
            timeout_ms: Some(120_000),
            ..Default::default()
        })
        .await?;
    anyhow::ensure!(r.exit_code == 0, "{command:?} exited {}", r.exit_code);
    Ok(String::from_utf8_lossy(r.stdout.as_slice()).into_owned())
}

#[tokio::main]
async fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    common::init_tracing();
    let lab = NetLab::up()?;
    let jailed = QemuVmm::new(QemuConfig {
        jail: JailConfig {
            dns_servers: vec![lab.dns],
            ..JailConfig::default()
        },
        ..QemuConfig::default()
    });
    let open = QemuVmm::new(QemuConfig {
        jail: JailConfig {
            enabled: Some(false),
            unfiltered_network_unjailed: true,
            ..JailConfig::default()
        },
        ..QemuConfig::default()
    });
    anyhow::ensure!(
        jailed.jailed() && !open.jailed(),
        "one jailed driver, one not"
    );
    let sb = common::Sandboxes::new();

    // One template snapshot both clone from.
    let mut spec = sb.spec("tpl");
    spec.memory = MemoryBacking::SharedFile;
    let tpl_vm = jailed.boot_vm(spec).await?;
    sb.track(tpl_vm.pid());
    let tpl = sb.path().join("tpl-snap");
    tpl_vm
        .snapshot(&tpl, SnapshotOptions::template().then(AfterSnapshot::Exit))
        .await?;
    tpl_vm.destroy().await?;

    // 1. Clone to first exec, alternating, after one warm-up each.
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..=rounds {
        for (k, driver) in [&open, &jailed].into_iter().enumerate() {
            let id = format!("c{round}-{k}");
            let t = Instant::now();
            let vm = driver.restore_vm(&tpl, sb.restore_spec(&id)).await?;
            sb.track(vm.pid());
            exec(&vm.agent(), "true").await?;
            let took = ms(t.elapsed());
            vm.destroy().await?;
            if round > 0 {
                times[k].push(took);
            }
        }
    }
    let (open_ms, jail_ms) = (median(times[0].clone()), median(times[1].clone()));
    println!(
        "clone to first exec, p50 of {rounds}: unjailed {open_ms:.0} ms, jailed {jail_ms:.0} ms, ratio {:.3} (target <= 1.1)",
        jail_ms / open_ms
    );

    // 2. Throughput from the stand-in internet into each guest.
    let fetch = format!(
        "nc -w 20 {} {} </dev/null | wc -c",
        netlab::INTERNET,
        netlab::BULK_PORT
    );
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let vms = [
        open.restore_vm(&tpl, sb.restore_spec("t-open")).await?,
        jailed.restore_vm(&tpl, sb.restore_spec("t-jail")).await?,
    ];
    for vm in &vms {
        sb.track(vm.pid());
        exec(&vm.agent(), &fetch).await?;
    }
    for _ in 0..5 {
        for (k, vm) in vms.iter().enumerate() {
            let t = Instant::now();
            let got = exec(&vm.agent(), &fetch).await?;
            let secs = t.elapsed().as_secs_f64();
            anyhow::ensure!(
                got.trim() == netlab::BULK_BYTES.to_string(),
                "short transfer: {got:?}"
            );
            rates[k].push(netlab::BULK_BYTES as f64 / secs / (1 << 20) as f64);
        }
    }
    let (open_rate, jail_rate) = (median(rates[0].clone()), median(rates[1].clone()));
    println!(
        "guest <- stand-in internet, median of 5 x 32 MiB: unjailed {open_rate:.1} MiB/s, jailed {jail_rate:.1} MiB/s, ratio {:.3} (target >= 0.8)",
        jail_rate / open_rate
    );
    for vm in vms {
        vm.destroy().await?;
    }
    Ok(())
}
