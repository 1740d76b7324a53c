//! Cold boot to first exec answered on `microvm` vs `q35`, same kernel,
//! initramfs and image, alternating machines per round.
//!
//! `cargo run --release -p hearth-vmm --example machine_compare [-- ROUNDS]`.
//! q35 needs `virtio_pci` in the initramfs; `HEARTH_Q35_INITRD` names one
//! that has it when the default does not.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use anyhow::Result;
use hearth_agent_protocol::ExecRequest;
use hearth_vmm::{MachineKind, QemuConfig, QemuVmm};

#[tokio::main]
async fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(3);
    common::init_tracing();
    let sb = common::Sandboxes::new();
    let mut results: Vec<(MachineKind, Vec<f64>)> =
        vec![(MachineKind::Microvm, vec![]), (MachineKind::Q35, vec![])];
    for round in 0..rounds {
        for (machine, times) in results.iter_mut() {
            let vmm = QemuVmm::new(QemuConfig {
                machine: *machine,
                ..QemuConfig::default()
            });
            let mut spec = sb.spec(&format!("{machine:?}-{round}").to_lowercase());
            if *machine == MachineKind::Q35 {
                if let Some(p) = std::env::var_os("HEARTH_Q35_INITRD") {
                    spec.initrd = p.into();
                }
            }
            let t = Instant::now();
            let vm = vmm.boot_vm(spec).await?;
            sb.track(vm.pid());
            vm.agent()
                .exec(&ExecRequest {
                    command: "true".into(),
                    ..Default::default()
                })
                .await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            vm.destroy().await?;
        }
    }
    for (machine, mut times) in results {
        times.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{machine:?}: cold boot -> exec answered p50 {:.0} ms (all: {:?})",
            times[times.len() / 2],
            times.iter().map(|t| *t as u64).collect::<Vec<_>>()
        );
    }
    Ok(())
}
