//! The kernel a restore names. QEMU reads the whole `-kernel` file into
//! its heap at start (for the firmware to hand to a booting guest), even
//! when `-incoming` means the guest never boots: 13.5 MiB of private
//! memory per restored VM with Debian's kernel, for nothing. A restore
//! names a stub instead: the kernel's boot header and setup code only,
//! which QEMU parses the same way (same option ROM, same RAM blocks, so
//! the migration stream loads), and whose payload is empty.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The stub's file name beside the kernel.
const SUFFIX: &str = "restore-stub";

/// The boot protocol's magic at 0x202 ("HdrS").
const HDRS: u32 = 0x5372_6448;

/// How many bytes of a bzImage are its header and setup code (the boot
/// protocol's `setup_sects`, 0 meaning 4, plus the boot sector), or `None`
/// for what is not a bzImage.
fn setup_len(header: &[u8]) -> Option<u64> {
    if header.len() < 0x206 {
        return None;
    }
    let magic = u32::from_le_bytes(header[0x202..0x206].try_into().ok()?);
    if magic != HDRS {
        return None;
    }
    let sects = match header[0x1f1] {
        0 => 4,
        n => u64::from(n),
    };
    Some((sects + 1) * 512)
}

/// The stub of `kernel` (written beside it once, atomically), or `kernel`
/// itself when it is not a bzImage or the stub cannot be written: a
/// restore then costs the memory, and still works.
pub(crate) fn for_restore(kernel: &Path) -> PathBuf {
    match write_stub(kernel) {
        Ok(Some(stub)) => stub,
        Ok(None) => kernel.to_path_buf(),
        Err(e) => {
            tracing::warn!(kernel = %kernel.display(), error = %e, "no restore stub of the kernel; restores load it whole");
            kernel.to_path_buf()
        }
    }
}

fn stub_path(kernel: &Path) -> Option<PathBuf> {
    let name = kernel.file_name()?.to_str()?;
    Some(kernel.with_file_name(format!("{name}.{SUFFIX}")))
}

fn write_stub(kernel: &Path) -> std::io::Result<Option<PathBuf>> {
    let Some(stub) = stub_path(kernel) else {
        return Ok(None);
    };
    let mut header = vec![0u8; 0x206];
    let mut f = std::fs::File::open(kernel)?;
    f.read_exact(&mut header)?;
    let Some(len) = setup_len(&header) else {
        return Ok(None);
    };
    let kernel_len = f.metadata()?.len();
    if len > kernel_len {
        return Ok(None);
    }
    // The stub is a pure function of the kernel's first bytes: one of the
    // right length newer than the kernel is this kernel's.
    if let (Ok(s), Ok(k)) = (std::fs::metadata(&stub), f.metadata()) {
        let fresh = match (s.modified(), k.modified()) {
            (Ok(sm), Ok(km)) => sm >= km,
            _ => false,
        };
        if s.len() == len && fresh {
            return Ok(Some(stub));
        }
    }
    let mut setup = vec![0u8; len as usize];
    let mut f = std::fs::File::open(kernel)?;
    f.read_exact(&mut setup)?;
    let tmp = stub.with_extension(format!("{SUFFIX}.{}", std::process::id()));
    let mut out = std::fs::File::create(&tmp)?;
    out.write_all(&setup)?;
    out.sync_all()?;
    std::fs::rename(&tmp, &stub)?;
    Ok(Some(stub))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bzimage(setup_sects: u8, payload: usize) -> Vec<u8> {
        let mut k = vec![0u8; (usize::from(setup_sects.max(4)) + 1) * 512 + payload];
        k[0x1f1] = setup_sects;
        k[0x202..0x206].copy_from_slice(&HDRS.to_le_bytes());
        for (i, b) in k.iter_mut().enumerate().skip(0x206) {
            *b = (i % 251) as u8;
        }
        k
    }

    #[test]
    fn the_stub_is_the_header_and_setup_only() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinuz");
        let image = bzimage(27, 100_000);
        std::fs::write(&kernel, &image).unwrap();
        let stub = for_restore(&kernel);
        assert_eq!(stub, dir.path().join("vmlinuz.restore-stub"));
        let got = std::fs::read(&stub).unwrap();
        assert_eq!(got.len(), 28 * 512);
        assert_eq!(got[..], image[..28 * 512]);
        // Asked again, the same file (not rewritten).
        let before = std::fs::metadata(&stub).unwrap().modified().unwrap();
        assert_eq!(for_restore(&kernel), stub);
        assert_eq!(
            std::fs::metadata(&stub).unwrap().modified().unwrap(),
            before
        );
    }

    #[test]
    fn zero_setup_sects_means_four() {
        let mut h = vec![0u8; 0x206];
        h[0x202..0x206].copy_from_slice(&HDRS.to_le_bytes());
        assert_eq!(setup_len(&h), Some(5 * 512));
    }

    #[test]
    fn what_is_not_a_bzimage_is_named_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let elf = dir.path().join("vmlinux");
        std::fs::write(&elf, vec![0x7fu8; 4096]).unwrap();
        assert_eq!(for_restore(&elf), elf);
        let short = dir.path().join("short");
        std::fs::write(&short, b"tiny").unwrap();
        assert_eq!(for_restore(&short), short);
        assert!(!dir.path().join("vmlinux.restore-stub").exists());
    }
}
