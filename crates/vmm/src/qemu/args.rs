//! The QEMU command line: built from a spec for a cold boot, and rewritten
//! from a snapshot's stored arguments for a restore (same devices in the same
//! order, only paths, the RAM backing and the egress switch swapped).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::layout::QemuLayout;
use crate::host::Accel;
use crate::spec::{MemoryBacking, VmSpec};
use hearth_agent_protocol::VIRTIO_PORT_NAME;

/// The machine model. `microvm` is the default: measured here (TCG, same
/// kernel, initramfs and image) cold boot to first exec answered is p50
/// 4.5 s on microvm vs 4.7 s on q35, and it has fewer devices to migrate.
/// q35 stays as the fallback; its initramfs needs the `virtio_pci` modules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineKind {
    /// `microvm` with ACPI, virtio-mmio devices. Boots faster, no PCI.
    #[default]
    Microvm,
    /// `q35` with virtio-pci devices, the fallback.
    Q35,
}

impl MachineKind {
    fn device(self, kind: &str) -> String {
        match self {
            MachineKind::Microvm => format!("virtio-{kind}-device"),
            MachineKind::Q35 => format!("virtio-{kind}-pci"),
        }
    }
}

/// Kernel command line words the driver always sets. `root=`/`rw` stay out:
/// the initramfs (the agent in init mode) mounts the disks itself.
///
/// `tsc_early_khz` (TCG only): the TSC rate the guest is told instead of
/// calibrating it (which hangs at random under TCG, DESIGN.md 4). It must
/// be the host's ([`crate::tsc`]): the guest's TSC is the host's, and it is
/// the guest's only clocksource. With it goes `tsc=reliable`: a guest
/// whose vCPU the host leaves waiting misses timer ticks, and the kernel's
/// clocksource watchdog, comparing the TSC with that tick count during
/// boot, would take the TSC for the broken clock and switch to jiffies,
/// a clock that then loses every tick missed (measured here on a loaded
/// host: 2% slow). QEMU keeps the TSC it hands out monotonic across vCPUs.
pub(crate) fn kernel_cmdline(spec: &VmSpec, tsc_early_khz: Option<u32>) -> String {
    let mut s = "console=ttyS0 reboot=k panic=-1 quiet".to_string();
    if let Some(khz) = tsc_early_khz {
        s.push_str(&format!(" {TSC_EARLY_KHZ}={khz} tsc=reliable"));
    }
    for w in &spec.kernel_args {
        s.push(' ');
        s.push_str(w);
    }
    s
}

const TSC_EARLY_KHZ: &str = "tsc_early_khz";

/// The TSC rate (kHz) the guest that ran with `args` was told on its
/// kernel command line, if it was told one: what its clocks were
/// calibrated for, for as long as it and its snapshots run.
pub(crate) fn tsc_early_khz(args: &[String]) -> Option<u32> {
    value_of(args, "-append")?
        .split_whitespace()
        .find_map(|w| w.strip_prefix(TSC_EARLY_KHZ)?.strip_prefix('='))?
        .parse()
        .ok()
}

/// How a restore backs guest RAM.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ram<'a> {
    Anonymous,
    File { path: &'a Path, share: bool },
}

pub(crate) fn memory_object(ram: Ram<'_>, memory_mb: u32) -> String {
    match ram {
        Ram::Anonymous => format!("memory-backend-ram,id=mem,size={memory_mb}M"),
        Ram::File { path, share } => format!(
            "memory-backend-file,id=mem,mem-path={},size={memory_mb}M,share={}",
            path.display(),
            if share { "on" } else { "off" }
        ),
    }
}

fn netdev(egress: bool) -> String {
    // No hostfwd: nothing reaches the guest from outside, ever.
    format!(
        "user,id=net0,restrict={}",
        if egress { "off" } else { "on" }
    )
}

/// The `-accel` value: TCG's translation cache bounded when configured.
pub(crate) fn accel_arg(accel: Accel, tcg_tb_size_mb: Option<u32>) -> String {
    match (accel, tcg_tb_size_mb) {
        (Accel::Tcg, Some(mb)) => format!("tcg,tb-size={mb}"),
        (a, _) => a.as_str().to_string(),
    }
}

/// The value after `flag`, if any.
pub(crate) fn value_of<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.windows(2)
        .find(|w| w[0] == flag)
        .map(|w| w[1].as_str())
}

/// Sets the value after every `flag` to `value`.
pub(crate) fn set_value(args: &mut [String], flag: &str, value: &str) {
    for i in 1..args.len() {
        if args[i - 1] == flag {
            args[i] = value.to_string();
        }
    }
}

/// Arguments of a cold boot; `tsc_early_khz` as in [`kernel_cmdline`].
pub(crate) fn build(
    spec: &VmSpec,
    layout: &QemuLayout,
    accel: Accel,
    machine: MachineKind,
    tcg_tb_size_mb: Option<u32>,
    tsc_early_khz: Option<u32>,
) -> Vec<String> {
    let ram = match spec.memory {
        MemoryBacking::Anonymous => Ram::Anonymous,
        MemoryBacking::SharedFile => Ram::File {
            path: &layout.memory_file,
            share: true,
        },
    };
    let accel_arg = accel_arg(accel, tcg_tb_size_mb);
    let machine_arg = match machine {
        MachineKind::Microvm => "microvm,acpi=on,rtc=on,memory-backend=mem",
        MachineKind::Q35 => "q35,memory-backend=mem",
    };
    let cpu = match accel {
        Accel::Kvm => "host",
        Accel::Tcg => "max",
    };
    let p = |p: &Path| p.display().to_string();
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    // `-display none` rather than `-nographic`: with `-nodefaults` both
    // mean no display, but -nographic would also claim stdio. `-no-reboot`:
    // a guest that panics (`panic=-1`) or reboots makes QEMU exit, so a
    // broken guest fails fast instead of boot-looping.
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    push(&["-accel", &accel_arg, "-machine", machine_arg, "-cpu", cpu]);
    push(&[
        "-smp",
        &spec.vcpus.to_string(),
        "-m",
        &format!("{}M", spec.memory_mb),
    ]);
    push(&["-object", &memory_object(ram, spec.memory_mb)]);
    push(&["-kernel", &p(&spec.kernel), "-initrd", &p(&spec.initrd)]);
    push(&["-append", &kernel_cmdline(spec, tsc_early_khz)]);
    push(&[
        "-chardev",
        &console_chardev(layout),
        "-serial",
        "chardev:console",
    ]);
    // Order matters: the guest sees the base image as vda, the sandbox disk as vdb.
    push(&[
        "-drive",
        &format!(
            "id=base,file={},if=none,format=raw,readonly=on",
            p(&spec.base_image)
        ),
        "-device",
        &format!("{},drive=base", machine.device("blk")),
        "-drive",
        &format!(
            "id=disk,file={},if=none,format=raw,discard=unmap",
            p(&spec.disk)
        ),
        "-device",
        &format!("{},drive=disk", machine.device("blk")),
    ]);
    push(&[
        "-device",
        &format!("{},id=vser0", machine.device("serial")),
        "-chardev",
        &format!(
            "socket,id=agent,path={},server=on,wait=off",
            p(&layout.agent_socket)
        ),
        "-device",
        &format!("virtserialport,bus=vser0.0,chardev=agent,name={VIRTIO_PORT_NAME}"),
    ]);
    let nic = match machine {
        MachineKind::Microvm => format!("{},netdev=net0", machine.device("net")),
        // No option ROM: nothing here PXE-boots.
        MachineKind::Q35 => format!("{},netdev=net0,romfile=", machine.device("net")),
    };
    push(&["-netdev", &netdev(spec.egress), "-device", &nic]);
    push(&[
        "-chardev",
        &format!(
            "socket,id=qmp,path={},server=on,wait=off",
            p(&layout.qmp_socket)
        ),
        "-mon",
        "chardev=qmp,mode=control",
    ]);
    a
}

/// The serial console's backend: a socket the driver reads and caps (a
/// `file` backend grows without bound). With no reader connected, QEMU
/// drops what the guest prints instead of blocking it.
pub(crate) fn console_chardev(layout: &QemuLayout) -> String {
    format!(
        "socket,id=console,path={},server=on,wait=off",
        layout.console_socket.display()
    )
}

/// QEMU's own seccomp filter for every jailed VMM: no obsolete system
/// calls, no setuid/setgid, no fork or exec, no scheduler or affinity
/// changes.
pub(crate) const SECCOMP: &str =
    "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// Makes `args` fit how the VM runs. Jailed: QEMU's seccomp filter is on
/// (added to arguments stored before the jail existed, too; it is not part
/// of the migration stream). Unjailed: the user-mode network would reach
/// the host's loopback, so it is cut (`restrict=on`) whatever the spec says,
/// unless `unfiltered_net` (benchmark baselines only).
pub(crate) fn confine(args: &mut Vec<String>, jailed: bool, unfiltered_net: bool) {
    if jailed {
        if !args.iter().any(|a| a == "-sandbox") {
            args.push("-sandbox".into());
            args.push(SECCOMP.into());
        }
        return;
    }
    if unfiltered_net {
        return;
    }
    for i in 1..args.len() {
        if args[i - 1] == "-netdev" && args[i].starts_with("user,") {
            args[i] = set_option(&args[i], "restrict", "on");
        }
    }
}

/// What changes between the VM a snapshot was taken of and a restored one.
#[derive(Debug)]
pub(crate) struct Rewrite<'a> {
    pub old_layout: &'a QemuLayout,
    pub old_disk: &'a Path,
    pub new_layout: &'a QemuLayout,
    pub new_disk: &'a Path,
    pub ram: Ram<'a>,
    pub memory_mb: u32,
    pub egress: bool,
}

/// The stored arguments with only paths, the RAM backing and the egress
/// switch swapped, plus `-incoming defer`. Fails when the stored arguments
/// do not have the shape this driver writes.
pub(crate) fn rewrite_for_restore(
    args: &[String],
    rw: &Rewrite<'_>,
) -> Result<Vec<String>, String> {
    let pairs: Vec<(String, String)> = [
        (&rw.old_layout.qmp_socket, &rw.new_layout.qmp_socket),
        (&rw.old_layout.agent_socket, &rw.new_layout.agent_socket),
        (&rw.old_layout.console_log, &rw.new_layout.console_log),
        (&rw.old_layout.memory_file, &rw.new_layout.memory_file),
    ]
    .into_iter()
    .map(|(a, b)| (a.display().to_string(), b.display().to_string()))
    .chain(std::iter::once((
        rw.old_disk.display().to_string(),
        rw.new_disk.display().to_string(),
    )))
    .collect();

    // A VM that was itself restored ran with `-incoming defer`: a snapshot
    // of it is restored the same way, so that pair is dropped here and added
    // back once below. Any other `-incoming` is not ours.
    let args: Vec<&String> = {
        let mut kept = Vec::with_capacity(args.len());
        let mut it = args.iter().peekable();
        while let Some(a) = it.next() {
            if a == "-incoming" && it.peek().is_some_and(|v| v.as_str() == "defer") {
                it.next();
                continue;
            }
            kept.push(a);
        }
        kept
    };
    let mut out = Vec::with_capacity(args.len() + 2);
    let (mut saw_mem, mut saw_net) = (false, false);
    let mut prev: Option<&str> = None;
    for arg in args {
        let next = match prev {
            Some("-object") if arg.starts_with("memory-backend-") => {
                saw_mem = true;
                memory_object(rw.ram, rw.memory_mb)
            }
            // Snapshots taken before the console was a socket wrote it to
            // a file: the backend is not in the migration stream.
            Some("-chardev")
                if arg.starts_with("file,id=console,") || arg.starts_with("socket,id=console,") =>
            {
                console_chardev(rw.new_layout)
            }
            Some("-netdev") if arg.starts_with("user,") => {
                saw_net = true;
                set_option(arg, "restrict", if rw.egress { "off" } else { "on" })
            }
            _ => substitute(arg, &pairs),
        };
        if matches!(prev, Some("-incoming")) {
            return Err("stored arguments already contain -incoming".into());
        }
        prev = Some(arg.as_str());
        out.push(next);
    }
    if !saw_mem || !saw_net {
        return Err("stored arguments lack the memory backend or the user netdev".into());
    }
    let old_dir = rw.old_layout.dir.display().to_string();
    if rw.old_layout.dir != rw.new_layout.dir {
        if let Some(left) = out.iter().find(|a| a.contains(&format!("{old_dir}/"))) {
            return Err(format!("argument {left:?} still names the old directory"));
        }
    }
    out.push("-incoming".into());
    out.push("defer".into());
    Ok(out)
}

/// Replaces whole values: an argument equal to an old path, or `key=old`
/// inside a comma-separated option string.
fn substitute(arg: &str, pairs: &[(String, String)]) -> String {
    if let Some((_, new)) = pairs.iter().find(|(old, _)| old == arg) {
        return new.clone();
    }
    arg.split(',')
        .map(|part| match part.split_once('=') {
            Some((k, v)) => match pairs.iter().find(|(old, _)| old == v) {
                Some((_, new)) => format!("{k}={new}"),
                None => part.to_string(),
            },
            None => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn set_option(arg: &str, key: &str, value: &str) -> String {
    let mut found = false;
    let mut parts: Vec<String> = arg
        .split(',')
        .map(|part| match part.split_once('=') {
            Some((k, _)) if k == key => {
                found = true;
                format!("{k}={value}")
            }
            _ => part.to_string(),
        })
        .collect();
    if !found {
        parts.push(format!("{key}={value}"));
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a TCG guest is told on a host whose TSC runs at 2596.136 MHz.
    const TSC: Option<u32> = Some(2_596_136);

    fn spec(dir: &str, id: &str) -> VmSpec {
        let mut s = VmSpec::new(
            id,
            Path::new(dir),
            "/k/vmlinuz",
            "/k/initrd.cpio.gz",
            "/images/base.ext4",
        );
        s.memory_mb = 256;
        s
    }

    fn value_after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn boot_args_have_the_guest_contract() {
        let s = spec("/d/sandboxes", "a");
        let a = build(
            &s,
            &QemuLayout::of(&s),
            Accel::Tcg,
            MachineKind::Microvm,
            None,
            TSC,
        );
        assert_eq!(value_after(&a, "-accel"), ["tcg"]);
        assert_eq!(
            value_after(&a, "-machine"),
            ["microvm,acpi=on,rtc=on,memory-backend=mem"]
        );
        let append = value_after(&a, "-append")[0];
        assert!(append.contains("console=ttyS0 reboot=k panic=-1 quiet"));
        assert!(append.contains("tsc_early_khz=2596136 tsc=reliable"));
        assert_eq!(tsc_early_khz(&a), TSC);
        assert!(!append.contains("root=") && !append.contains(" rw"));
        let devices = value_after(&a, "-device");
        assert_eq!(devices[0], "virtio-blk-device,drive=base");
        assert_eq!(devices[1], "virtio-blk-device,drive=disk");
        assert!(devices.contains(&"virtserialport,bus=vser0.0,chardev=agent,name=hearth.agent"));
        let drives = value_after(&a, "-drive");
        assert!(drives[0].contains("file=/images/base.ext4") && drives[0].contains("readonly=on"));
        assert!(drives[1].contains("file=/d/sandboxes/a/disk.ext4"));
        assert_eq!(value_after(&a, "-netdev"), ["user,id=net0,restrict=off"]);
        assert!(a.iter().all(|x| !x.contains("hostfwd")));
        assert!(value_after(&a, "-chardev")
            .contains(&"socket,id=qmp,path=/d/sandboxes/a/qmp.sock,server=on,wait=off"));
        assert!(value_after(&a, "-chardev")
            .contains(&"socket,id=console,path=/d/sandboxes/a/console.sock,server=on,wait=off"));

        let mut s2 = s.clone();
        s2.egress = false;
        let a2 = build(
            &s2,
            &QemuLayout::of(&s2),
            Accel::Kvm,
            MachineKind::Q35,
            None,
            None,
        );
        assert_eq!(value_after(&a2, "-netdev"), ["user,id=net0,restrict=on"]);
        assert!(!value_after(&a2, "-append")[0].contains("tsc"));
        assert_eq!(tsc_early_khz(&a2), None);
        assert_eq!(value_after(&a2, "-device")[0], "virtio-blk-pci,drive=base");
    }

    #[test]
    fn restore_swaps_paths_ram_and_egress_only() {
        let mut old = spec("/d/sandboxes", "a");
        old.memory = MemoryBacking::SharedFile;
        let old_args = build(
            &old,
            &QemuLayout::of(&old),
            Accel::Tcg,
            MachineKind::Microvm,
            None,
            TSC,
        );
        let mut new = spec("/d/sandboxes", "b");
        new.egress = false;
        let ram_file = Path::new("/d/templates/t/memory.ram");
        let out = rewrite_for_restore(
            &old_args,
            &Rewrite {
                old_layout: &QemuLayout::of(&old),
                old_disk: &old.disk,
                new_layout: &QemuLayout::of(&new),
                new_disk: &new.disk,
                ram: Ram::File {
                    path: ram_file,
                    share: false,
                },
                memory_mb: 256,
                egress: new.egress,
            },
        )
        .unwrap();
        assert_eq!(out.len(), old_args.len() + 2);
        assert_eq!(&out[out.len() - 2..], ["-incoming", "defer"]);
        assert!(
            out.iter().all(|a| !a.contains("/d/sandboxes/a/")),
            "{out:?}"
        );
        assert_eq!(
            value_after(&out, "-object"),
            ["memory-backend-file,id=mem,mem-path=/d/templates/t/memory.ram,size=256M,share=off"]
        );
        assert_eq!(value_after(&out, "-netdev"), ["user,id=net0,restrict=on"]);
        // The clone's kernel is the snapshot's: so is the rate it was told.
        assert_eq!(tsc_early_khz(&out), TSC);
        // Everything else is identical, in the same order.
        let expected = build(
            &new,
            &QemuLayout::of(&new),
            Accel::Tcg,
            MachineKind::Microvm,
            None,
            TSC,
        );
        for (i, (o, e)) in out.iter().zip(expected.iter()).enumerate() {
            if value_after(&out, "-object")[0] == o.as_str() {
                continue;
            }
            assert_eq!(o, e, "arg {i}");
        }
    }

    #[test]
    fn a_restored_vm_can_be_restored_again() {
        let a = spec("/d/sandboxes", "a");
        let b = spec("/d/sandboxes", "b");
        let c = spec("/d/sandboxes", "c");
        let rw = |from: &VmSpec,
                  to: &VmSpec|
         -> (
            QemuLayout,
            QemuLayout,
            std::path::PathBuf,
            std::path::PathBuf,
        ) {
            (
                QemuLayout::of(from),
                QemuLayout::of(to),
                from.disk.clone(),
                to.disk.clone(),
            )
        };
        let first = build(
            &a,
            &QemuLayout::of(&a),
            Accel::Tcg,
            MachineKind::Microvm,
            None,
            TSC,
        );
        let (ol, nl, od, nd) = rw(&a, &b);
        let restored = rewrite_for_restore(
            &first,
            &Rewrite {
                old_layout: &ol,
                old_disk: &od,
                new_layout: &nl,
                new_disk: &nd,
                ram: Ram::Anonymous,
                memory_mb: 256,
                egress: true,
            },
        )
        .unwrap();
        // A snapshot of the restored VM stores its args, `-incoming` included.
        let (ol, nl, od, nd) = rw(&b, &c);
        let again = rewrite_for_restore(
            &restored,
            &Rewrite {
                old_layout: &ol,
                old_disk: &od,
                new_layout: &nl,
                new_disk: &nd,
                ram: Ram::Anonymous,
                memory_mb: 256,
                egress: true,
            },
        )
        .unwrap();
        assert_eq!(again.iter().filter(|a| *a == "-incoming").count(), 1);
        assert_eq!(again.len(), restored.len());
        assert!(
            again.iter().all(|x| !x.contains("/d/sandboxes/b/")),
            "{again:?}"
        );
        let mut foreign = first.clone();
        foreign.extend(["-incoming".to_string(), "tcp:0:4444".to_string()]);
        let (ol, nl, od, nd) = rw(&a, &b);
        let err = rewrite_for_restore(
            &foreign,
            &Rewrite {
                old_layout: &ol,
                old_disk: &od,
                new_layout: &nl,
                new_disk: &nd,
                ram: Ram::Anonymous,
                memory_mb: 256,
                egress: true,
            },
        );
        assert!(err.is_err(), "an -incoming we did not write is refused");
    }

    #[test]
    fn confine_adds_seccomp_once_and_cuts_the_network_when_unjailed() {
        let s = spec("/d/sandboxes", "a");
        let mut a = build(
            &s,
            &QemuLayout::of(&s),
            Accel::Tcg,
            MachineKind::Microvm,
            None,
            TSC,
        );
        confine(&mut a, true, false);
        confine(&mut a, true, false);
        assert_eq!(value_after(&a, "-sandbox"), [SECCOMP]);
        assert_eq!(value_after(&a, "-netdev"), ["user,id=net0,restrict=off"]);
        let mut b = build(
            &s,
            &QemuLayout::of(&s),
            Accel::Tcg,
            MachineKind::Microvm,
            None,
            TSC,
        );
        confine(&mut b, false, false);
        assert_eq!(value_after(&b, "-netdev"), ["user,id=net0,restrict=on"]);
        assert!(value_after(&b, "-sandbox").is_empty());
    }

    #[test]
    fn restore_moves_an_old_file_console_to_the_socket() {
        let old = spec("/d/sandboxes", "a");
        let mut args = build(
            &old,
            &QemuLayout::of(&old),
            Accel::Tcg,
            MachineKind::Microvm,
            None,
            TSC,
        );
        for a in args.iter_mut() {
            if a.starts_with("socket,id=console,") {
                *a = "file,id=console,path=/d/sandboxes/a/console.log".into();
            }
        }
        let new = spec("/d/sandboxes", "b");
        let out = rewrite_for_restore(
            &args,
            &Rewrite {
                old_layout: &QemuLayout::of(&old),
                old_disk: &old.disk,
                new_layout: &QemuLayout::of(&new),
                new_disk: &new.disk,
                ram: Ram::Anonymous,
                memory_mb: 256,
                egress: true,
            },
        )
        .unwrap();
        assert!(value_after(&out, "-chardev")
            .contains(&"socket,id=console,path=/d/sandboxes/b/console.sock,server=on,wait=off"));
        assert!(out.iter().all(|a| !a.starts_with("file,id=console")));
    }

    #[test]
    fn restore_rejects_foreign_args() {
        let s = spec("/d/sandboxes", "a");
        let l = QemuLayout::of(&s);
        let rw = Rewrite {
            old_layout: &l,
            old_disk: &s.disk,
            new_layout: &l,
            new_disk: &s.disk,
            ram: Ram::Anonymous,
            memory_mb: 256,
            egress: true,
        };
        assert!(rewrite_for_restore(&["-m".into(), "256M".into()], &rw).is_err());
    }
}
