//! The VMM process confined: its uid, capabilities, seccomp filter,
//! namespaces, root and cgroup limits, and what a VMM gone rogue can do to
//! the template its VM was cloned from.

use super::*;
#[tokio::test]
async fn the_vmm_runs_unprivileged_confined_and_limited() -> anyhow::Result<()> {
    let w = setup().await?;
    // A neighbour directory the jail must not show.
    std::fs::create_dir_all(w.sb.path().join("neighbour"))?;
    std::fs::write(w.sb.path().join("neighbour/secret"), "x")?;
    let vm = w.boot("jailed").await?;
    let pid = vm.pid();
    let jail = vm.jail().expect("jailed").clone();

    let uids: Vec<u32> = status_field(pid, "Uid")
        .split_whitespace()
        .map(|u| u.parse().expect("uid"))
        .collect();
    assert_eq!(uids, vec![jail.uid; 4], "real, effective, saved, fs uid");
    assert_ne!(jail.uid, 0);
    assert_eq!(status_field(pid, "CapEff"), "0000000000000000");
    assert_eq!(status_field(pid, "CapPrm"), "0000000000000000");
    assert_eq!(status_field(pid, "CapBnd"), "0000000000000000");
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(pid, "Seccomp"), "2", "QEMU's -sandbox filter");

    let ns = |p: &str, kind: &str| std::fs::read_link(format!("/proc/{p}/ns/{kind}")).expect("ns");
    assert_ne!(
        ns(&pid.to_string(), "mnt"),
        ns("self", "mnt"),
        "own mount namespace"
    );
    let netns_ino = std::fs::metadata(jail.netns())?.ino();
    assert_eq!(
        ns(&pid.to_string(), "net").to_string_lossy(),
        format!("net:[{netns_ino}]")
    );

    // Its root holds its own files and read-only system directories only.
    let root = std::path::PathBuf::from(format!("/proc/{pid}/root"));
    let mut etc: Vec<String> = std::fs::read_dir(root.join("etc"))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    etc.sort();
    assert!(
        etc.iter()
            .all(|f| ["ld.so.cache", "localtime", "resolv.conf"].contains(&f.as_str())),
        "{etc:?}"
    );
    let inside = |p: &std::path::Path| root.join(p.strip_prefix("/").expect("absolute"));
    let mut seen: Vec<String> = std::fs::read_dir(inside(w.sb.path()))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    seen.sort();
    assert_eq!(seen, ["jailed"], "only its own VM directory");
    assert!(!inside(&w.sb.path().join("neighbour/secret")).exists());
    assert!(!root.join("root").exists() && !root.join("home").exists());
    assert!(inside(&vm.spec().disk).exists());

    // Its cgroup, with the memory limit set.
    assert!(!jail.cgroups.is_empty(), "a cgroup hierarchy was found");
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    assert!(
        cg.contains(&format!("/hearth/vm-{}", jail.slot)),
        "in its cgroup: {cg}"
    );
    let overhead = u64::from(JailConfig::default().memory_overhead_mb);
    assert_eq!(
        jail.memory_limit(),
        Some((u64::from(vm.spec().memory_mb) + overhead) << 20)
    );
    for d in &jail.cgroups {
        let procs = std::fs::read_to_string(d.join("cgroup.procs"))?;
        assert!(
            procs.lines().any(|l| l == pid.to_string()),
            "{}",
            d.display()
        );
    }
    // The limits hold: a process in the VM's cgroup (a QEMU gone rogue)
    // that allocates past the memory limit is killed, and one that forks
    // without end is refused before pids_max.
    let hog = in_vm_cgroup(
        &jail.cgroups,
        "import sys; b = bytearray(1 << 30); b[::4096] = b'x' * len(b[::4096]); print('survived')",
    )?;
    assert!(!hog.status.success(), "a 1 GiB allocation ran: {hog:?}");
    assert!(!String::from_utf8_lossy(&hog.stdout).contains("survived"));
    let bomb = in_vm_cgroup(
        &jail.cgroups,
        // Each child becomes a small `sleep` with its output elsewhere.
        "import os\npids = []\ntry:\n    for _ in range(2000):\n        p = os.fork()\n        if p == 0:\n            os.dup2(os.open('/dev/null', os.O_WRONLY), 1)\n            os.execv('/bin/sleep', ['sleep', '60'])\n        pids.append(p)\n    print('forked', len(pids))\nexcept OSError:\n    print('refused', len(pids))\nfor p in pids:\n    os.kill(p, 9)\n    os.waitpid(p, 0)\n",
    )?;
    let said = String::from_utf8_lossy(&bomb.stdout);
    let forked: usize = said
        .strip_prefix("refused ")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("fork bomb not refused: {said:?}"));
    assert!(forked < JailConfig::default().pids_max as usize, "{forked}");

    // The guest works as always.
    assert_eq!(sh(&vm.agent(), "echo fine").await?, "fine\n");
    vm.destroy().await?;
    // Everything of the jail is gone with it.
    assert!(!jail.netns().exists());
    for d in &jail.cgroups {
        assert!(!d.exists(), "{}", d.display());
    }
    assert!(!std::path::Path::new(&format!("/sys/class/net/{}", jail.host_interface())).exists());
    Ok(())
}

/// Runs `python3 -c script` as a member of the cgroups in `dirs`.
fn in_vm_cgroup(dirs: &[std::path::PathBuf], script: &str) -> anyhow::Result<std::process::Output> {
    let join: String = dirs
        .iter()
        .map(|d| format!("echo $$ > {}/cgroup.procs && ", d.display()))
        .collect();
    Ok(std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{join}exec python3 -c \"$0\""))
        .arg(script)
        .output()?)
}

/// What a VMM gone rogue tries against the template its VM was cloned
/// from, run in that VMM's mount namespace with its uid, gid and groups:
/// open the template's RAM file, then change the RAM it maps through every
/// descriptor of it the VMM holds. Prints what each attempt got, as JSON.
const ROGUE_VMM: &str = r#"
import errno, json, mmap, os, sys
qemu, uid, gid, groups, ram = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
os.setgroups([int(g) for g in groups.split()])
os.setgid(gid)
os.setuid(uid)
out = {}
def attempt(name, f):
    try:
        f()
        out[name] = "done"
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, str(e.errno))
attempt("open the template's file", lambda: os.close(os.open(ram, os.O_RDWR)))
pids = [p for p in os.listdir("/proc") if p.isdigit()]
out["pids"] = sorted(int(p) for p in pids)
out["uids"] = sorted({os.stat("/proc/" + p).st_uid for p in pids})
fds = ["/proc/%d/fd/%s" % (qemu, n) for n in os.listdir("/proc/%d/fd" % qemu)]
sealed = [p for p in fds if "hearth-template-ram" in os.readlink(p)]
out["sealed"] = len(sealed)
for i, p in enumerate(sealed):
    fd = os.open(p, os.O_RDWR)
    attempt("write %d" % i, lambda: os.pwrite(fd, b"EVIL", 4096))
    attempt("truncate %d" % i, lambda: os.ftruncate(fd, 4096))
    attempt("grow %d" % i, lambda: os.ftruncate(fd, 1 << 40))
    attempt("map shared %d" % i, lambda: mmap.mmap(fd, 4096, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE))
print(json.dumps(out))
"#;

/// A template's clones cannot change what later clones start from: the
/// RAM file stays root's and outside every jail, and the sealed copy a
/// clone maps refuses every write its VMM (gone rogue) tries, while the
/// clone's own writes stay private. The jail's `/proc`, there to name that
/// copy, shows the VMM nothing but itself.
#[tokio::test]
async fn a_rogue_vmm_cannot_change_the_template_its_clones_start_from() -> anyhow::Result<()> {
    use hearth_vmm::{AfterSnapshot, MemoryBacking, SnapshotOptions};
    let w = setup().await?;
    let mut spec = w.sb.spec("tmpl");
    spec.memory = MemoryBacking::SharedFile;
    let vm = w.vmm.boot_vm(spec).await?;
    w.sb.track(vm.pid());
    // In the guest's RAM (tmpfs), so it comes from the template's RAM.
    sh(&vm.agent(), "echo from-template > /dev/shm/mark").await?;
    let snap = w.sb.path().join("template");
    vm.snapshot(&snap, SnapshotOptions::template().then(AfterSnapshot::Exit))
        .await?;
    vm.destroy().await?;
    let ram = snap.join("memory.ram");
    let meta = std::fs::metadata(&ram)?;
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (0, 0, 0o600));
    let ram_before = std::fs::read(&ram)?;

    let mut clones = Vec::new();
    for id in ["clone-a", "clone-b"] {
        let c = w.vmm.restore_vm(&snap, w.sb.restore_spec(id)).await?;
        w.sb.track(c.pid());
        clones.push(c);
    }
    let (a, b) = (&clones[0], &clones[1]);
    let jail = a.jail().expect("jailed").clone();
    sh(&a.agent(), "echo clone-a > /dev/shm/mark").await?;
    let groups = status_field(a.pid(), "Groups");
    let rogue = std::process::Command::new("nsenter")
        .arg(format!("--mount=/proc/{}/ns/mnt", a.pid()))
        .args(["--", "/usr/bin/python3", "-c", ROGUE_VMM])
        .args([
            a.pid().to_string(),
            jail.uid.to_string(),
            jail.gid.to_string(),
            groups,
            ram.display().to_string(),
        ])
        .output()?;
    assert!(rogue.status.success(), "{rogue:?}");
    let got: HashMap<String, serde_json::Value> = serde_json::from_slice(&rogue.stdout)?;
    eprintln!("rogue VMM: {got:?}");
    assert_eq!(
        got["open the template's file"], "ENOENT",
        "the file is outside the jail"
    );
    assert!(
        got["sealed"].as_u64() >= Some(1),
        "no sealed RAM found: {got:?}"
    );
    for (name, result) in &got {
        if ["write", "truncate", "grow", "map shared"]
            .iter()
            .any(|w| name.starts_with(w))
        {
            assert_eq!(result, "EPERM", "{name}");
        }
    }
    let pids: Vec<u64> = serde_json::from_value(got["pids"].clone())?;
    assert!(pids.contains(&u64::from(a.pid())));
    assert!(
        !pids.contains(&u64::from(b.pid())),
        "another VMM is visible"
    );
    assert!(
        !pids.contains(&u64::from(std::process::id())),
        "the driver is visible"
    );
    assert_eq!(got["uids"], serde_json::json!([jail.uid]));

    // Nothing changed: the file, the other clone, and a clone made now.
    assert!(
        std::fs::read(&ram)? == ram_before,
        "the template's RAM file changed"
    );
    assert_eq!(
        sh(&b.agent(), "cat /dev/shm/mark").await?,
        "from-template\n"
    );
    assert_eq!(sh(&a.agent(), "cat /dev/shm/mark").await?, "clone-a\n");
    let c = w
        .vmm
        .restore_vm(&snap, w.sb.restore_spec("clone-c"))
        .await?;
    w.sb.track(c.pid());
    assert_eq!(
        sh(&c.agent(), "cat /dev/shm/mark").await?,
        "from-template\n"
    );
    for v in [a, b, &c] {
        v.destroy().await?;
    }
    Ok(())
}
