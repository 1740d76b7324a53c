//! The real Debian cloud kernel: fetched with apt-get, unpacked, depmod'ed,
//! and packed with the agent into the initramfs.

mod common;

use std::io::Read;
use std::time::Instant;

use hearth_image::cpio::{self, EntryKind};
use hearth_image::modules::module_name;

#[test]
fn kernel_fetch_unpacks_vmlinuz_and_orders_modules() {
    let store = common::store();
    let started = Instant::now();
    let kernel = store.kernel().expect("kernel fetch");
    eprintln!("kernel() took {:?}", started.elapsed());

    assert!(
        kernel.version.ends_with("-cloud-amd64"),
        "{}",
        kernel.version
    );
    assert_eq!(
        kernel.vmlinuz,
        common::data_dir()
            .join("kernels")
            .join(&kernel.version)
            .join("vmlinuz")
    );
    let image = std::fs::read(&kernel.vmlinuz).unwrap();
    assert!(image.len() > 1 << 20, "vmlinuz is a real kernel");
    assert_eq!(&image[0x202..0x206], b"HdrS", "x86 boot protocol header");
    let dep = std::fs::read_to_string(kernel.modules_dir.join("modules.dep")).unwrap();
    assert!(dep.contains("kernel/drivers/block/virtio_blk.ko:"));

    let modules = kernel.guest_modules().unwrap();
    let pos = |name: &str| {
        modules
            .iter()
            .position(|m| module_name(m) == name)
            .unwrap_or_else(|| panic!("{name} not in {modules:?}"))
    };
    for (dependent, dep) in [
        ("virtio_blk", "virtio_ring"),
        ("virtio_blk", "virtio"),
        ("virtio_net", "net_failover"),
        ("net_failover", "failover"),
        ("virtio_pci", "virtio_pci_modern_dev"),
        ("vmw_vsock_virtio_transport", "vsock"),
    ] {
        assert!(
            pos(dep) < pos(dependent),
            "{dep} after {dependent}: {modules:?}"
        );
    }
    // Every dependency modules.dep names comes first, whichever way this
    // kernel's build has it (virtio and virtio_ring swapped places between
    // Debian's 6.1 cloud kernel updates).
    for line in dep.lines() {
        let Some((module, deps)) = line.split_once(':') else {
            continue;
        };
        let Some(at) = modules.iter().position(|m| m == module) else {
            continue;
        };
        for d in deps.split_whitespace() {
            if let Some(d_at) = modules.iter().position(|m| m == d) {
                assert!(d_at < at, "{d} after {module}: {modules:?}");
            }
        }
    }
    for name in ["virtio_mmio", "virtio_console", "overlay", "virtio_rng"] {
        pos(name);
    }
    for module in &modules {
        assert!(module.ends_with(".ko"), "{module}");
        assert!(kernel.modules_dir.join(module).is_file(), "{module}");
    }

    let again = Instant::now();
    assert_eq!(store.kernel().unwrap(), kernel);
    assert!(again.elapsed().as_secs() < 5, "second call is a cache hit");
}

#[test]
fn initramfs_follows_the_agent_contract() {
    let store = common::store();
    let kernel = store.kernel().expect("kernel fetch");
    let agent = common::agent();
    let started = Instant::now();
    let path = store.initramfs(&kernel, &agent).expect("initramfs build");
    eprintln!("initramfs() took {:?}", started.elapsed());

    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("initramfs-") && name.ends_with(".cpio.gz"),
        "{name}"
    );
    assert_eq!(path.parent().unwrap(), kernel.vmlinuz.parent().unwrap());

    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
        .read_to_end(&mut raw)
        .unwrap();
    let entries = cpio::parse(&raw).unwrap();
    let get = |name: &str| {
        entries
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    for dir in [
        "dev",
        "proc",
        "sys",
        "mnt",
        "newroot",
        "etc",
        "etc/hearth",
        "lib",
        "lib/modules",
    ] {
        let e = get(dir);
        assert_eq!((e.kind, e.perm), (EntryKind::Dir, 0o755), "{dir}");
    }
    let console = get("dev/console");
    assert_eq!(console.kind, EntryKind::CharDevice { major: 5, minor: 1 });
    assert_eq!(console.perm, 0o600);
    let init = get("init");
    assert_eq!((init.kind, init.perm), (EntryKind::File, 0o755));
    assert!(
        init.data == std::fs::read(&agent).unwrap(),
        "/init is the agent"
    );
    assert_eq!(
        get("etc/hearth/kernel-version").data,
        kernel.version.as_bytes()
    );

    let list = String::from_utf8(get("etc/hearth/modules").data.clone()).unwrap();
    let listed: Vec<&str> = list.lines().collect();
    assert_eq!(listed, kernel.guest_modules().unwrap());
    for module in &listed {
        let e = get(&format!("lib/modules/{}/{module}", kernel.version));
        assert_eq!((e.kind, e.perm), (EntryKind::File, 0o644));
        assert!(e.data == std::fs::read(kernel.modules_dir.join(module)).unwrap());
    }

    let again = Instant::now();
    assert_eq!(store.initramfs(&kernel, &agent).unwrap(), path);
    assert!(again.elapsed().as_secs() < 5, "second call is a cache hit");
}
