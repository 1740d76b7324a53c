//! Which kernel modules the guest needs and the order to load them in,
//! resolved from the kernel's own `modules.dep` (as written by `depmod`).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::error::ImageError;

/// Drivers the guest cannot boot or talk to the host without. Everything they
/// depend on is pulled in from `modules.dep`. ext4 and jbd2 are built into
/// Debian's cloud kernel; a module that a kernel has built in is skipped.
pub const GUEST_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_pci",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_blk",
    "virtio_net",
    "net_failover",
    "failover",
    "virtio_console",
    "vmw_vsock_virtio_transport",
    "vmw_vsock_virtio_transport_common",
    "vsock",
    "overlay",
    "virtio_rng",
];

/// A parsed `modules.dep` plus `modules.builtin`.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    /// Module name -> (path relative to `/lib/modules/<ver>/`, dependency names).
    modules: HashMap<String, (String, Vec<String>)>,
    builtin: HashSet<String>,
}

/// `kernel/drivers/block/virtio_blk.ko` (or `.ko.xz`...) -> `virtio_blk`.
/// Module names treat `-` and `_` alike; `_` is canonical.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

impl ModuleIndex {
    /// Parses the text of `modules.dep` (`path: dep-path dep-path...`) and of
    /// `modules.builtin` (one path per line; may be empty).
    pub fn parse(modules_dep: &str, modules_builtin: &str) -> Self {
        let mut modules = HashMap::new();
        for line in modules_dep.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim();
            if path.is_empty() {
                continue;
            }
            let deps = deps.split_whitespace().map(module_name).collect();
            modules.insert(module_name(path), (path.to_owned(), deps));
        }
        let builtin = modules_builtin
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(module_name)
            .collect();
        Self { modules, builtin }
    }

    /// Reads `modules.dep` and `modules.builtin` from a module tree
    /// (`/lib/modules/<ver>/`).
    pub fn load(modules_dir: &Path) -> Result<Self, ImageError> {
        let dep_path = modules_dir.join("modules.dep");
        let dep = std::fs::read_to_string(&dep_path).map_err(ImageError::io(&dep_path))?;
        let builtin_path = modules_dir.join("modules.builtin");
        let builtin = match std::fs::read_to_string(&builtin_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(ImageError::io(&builtin_path)(e)),
        };
        Ok(Self::parse(&dep, &builtin))
    }

    /// The module files (relative paths) needed to load `wanted`, each after
    /// everything it depends on. Built-in modules are skipped; a module that
    /// is neither loadable nor built in is an error naming it.
    pub fn load_order(&self, wanted: &[&str], version: &str) -> Result<Vec<String>, ImageError> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            Visiting,
            Done,
        }
        fn visit(
            index: &ModuleIndex,
            name: &str,
            version: &str,
            marks: &mut HashMap<String, Mark>,
            order: &mut Vec<String>,
        ) -> Result<(), ImageError> {
            match marks.get(name) {
                Some(Mark::Done) => return Ok(()),
                Some(Mark::Visiting) => {
                    return Err(ImageError::ModuleCycle {
                        module: name.to_owned(),
                    })
                }
                None => {}
            }
            let Some((path, deps)) = index.modules.get(name) else {
                if index.builtin.contains(name) {
                    marks.insert(name.to_owned(), Mark::Done);
                    return Ok(());
                }
                return Err(ImageError::MissingModule {
                    module: name.to_owned(),
                    version: version.to_owned(),
                });
            };
            marks.insert(name.to_owned(), Mark::Visiting);
            // modules.dep lists the deepest dependencies last and modprobe
            // loads the list back to front; visiting in that order keeps
            // modprobe's order even between modules that only look related.
            for dep in deps.iter().rev() {
                visit(index, dep, version, marks, order)?;
            }
            marks.insert(name.to_owned(), Mark::Done);
            order.push(path.clone());
            Ok(())
        }

        let mut marks = HashMap::new();
        let mut order = Vec::new();
        for name in wanted {
            visit(self, &module_name(name), version, &mut marks, &mut order)?;
        }
        Ok(order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/fs/overlayfs/overlay.ko:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vsock.ko:
kernel/drivers/char/some-dash_mod.ko.xz:
";
    const BUILTIN: &str = "kernel/fs/ext4/ext4.ko\nkernel/fs/jbd2/jbd2.ko\n";

    fn position(order: &[String], name: &str) -> usize {
        order
            .iter()
            .position(|p| module_name(p) == name)
            .unwrap_or_else(|| panic!("{name} missing from {order:?}"))
    }

    #[test]
    fn dependencies_come_before_dependents() {
        let index = ModuleIndex::parse(DEP, BUILTIN);
        let order = index
            .load_order(
                &["virtio_net", "virtio_blk", "vmw_vsock_virtio_transport"],
                "6.1",
            )
            .unwrap();
        assert_eq!(order.len(), 9, "{order:?}");
        assert_eq!(
            order.iter().collect::<HashSet<_>>().len(),
            9,
            "no duplicates"
        );
        for (dependent, dep) in [
            ("virtio_net", "net_failover"),
            ("virtio_net", "failover"),
            ("net_failover", "failover"),
            ("virtio_net", "virtio_ring"),
            ("virtio_ring", "virtio"),
            ("virtio_blk", "virtio_ring"),
            (
                "vmw_vsock_virtio_transport",
                "vmw_vsock_virtio_transport_common",
            ),
            ("vmw_vsock_virtio_transport_common", "vsock"),
        ] {
            assert!(
                position(&order, dep) < position(&order, dependent),
                "{dep} must precede {dependent}: {order:?}"
            );
        }
        // modprobe's order: the last-listed dependency of the first module leads.
        assert_eq!(order[0], "kernel/drivers/virtio/virtio.ko");
    }

    #[test]
    fn builtin_modules_are_skipped_and_unknown_ones_fail() {
        let index = ModuleIndex::parse(DEP, BUILTIN);
        let order = index.load_order(&["ext4", "overlay"], "6.1").unwrap();
        assert_eq!(order, ["kernel/fs/overlayfs/overlay.ko"]);
        let err = index.load_order(&["virtio_gpu"], "6.1").unwrap_err();
        assert!(
            matches!(&err, ImageError::MissingModule { module, .. } if module == "virtio_gpu"),
            "{err:?}"
        );
    }

    #[test]
    fn names_normalize_dashes_and_compression_suffixes() {
        assert_eq!(
            module_name("kernel/drivers/char/some-dash_mod.ko.xz"),
            "some_dash_mod"
        );
        let index = ModuleIndex::parse(DEP, "");
        let order = index.load_order(&["some-dash-mod"], "6.1").unwrap();
        assert_eq!(order, ["kernel/drivers/char/some-dash_mod.ko.xz"]);
    }

    #[test]
    fn cycles_are_reported() {
        let index = ModuleIndex::parse("a.ko: b.ko\nb.ko: a.ko\n", "");
        let err = index.load_order(&["a"], "6.1").unwrap_err();
        assert!(matches!(err, ImageError::ModuleCycle { .. }), "{err:?}");
    }
}
