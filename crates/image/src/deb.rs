//! Debian packages as build inputs: resolved with `apt-cache`, fetched with
//! `apt-get download` into `<data>/cache/debs/`, unpacked with `dpkg-deb -x`.
//! Nothing is ever installed on the host.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd;
use crate::error::{CommandError, ImageError};
use crate::progress::Step;
use crate::staging::{lock_artifact, Staging};
use crate::Layout;

/// Where a package comes from: the host's own package sources, or another
/// Debian suite from the host's Debian mirror (with an index of its own
/// under `<data>/cache/apt-<suite>/`; the host's apt setup is untouched).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Host,
    Suite(&'static str),
}

/// The cached `.deb` of `package`, downloading it when the cache has none.
/// A cached file is used as is (so builds work offline); the recipes hash
/// what they take out of it, not the package version.
pub(crate) fn fetch(layout: &Layout, package: &str) -> Result<PathBuf, ImageError> {
    fetch_from(layout, package, Source::Host)
}

/// [`fetch`] from `source`.
pub(crate) fn fetch_from(
    layout: &Layout,
    package: &str,
    source: Source,
) -> Result<PathBuf, ImageError> {
    let cache_dir = &match source {
        Source::Host => layout.deb_cache(),
        Source::Suite(suite) => layout.deb_cache().join(suite),
    };
    if let Some(cached) = cached(cache_dir, package)? {
        return Ok(cached);
    }
    let _lock = lock_artifact(&layout.locks(), &format!("deb-{package}"))?;
    if let Some(cached) = cached(cache_dir, package)? {
        return Ok(cached);
    }
    let step = Step::start(format!("downloading {package}"));
    let staging = Staging::new(&layout.tmp(), "download")?;
    let options = match source {
        Source::Host => Vec::new(),
        Source::Suite(suite) => suite_options(layout, suite)?,
    };
    let download = || {
        cmd::run(
            Command::new("apt-get")
                .args(&options)
                // As root apt would otherwise warn that `_apt` cannot write here.
                .args(["-o", "APT::Sandbox::User=root", "-q", "download", package])
                .current_dir(staging.path()),
        )
    };
    if let Err(first) = download() {
        // An empty or stale package index is the usual cause; refresh it once.
        step.set_message("apt-get update");
        let updated = cmd::run(Command::new("apt-get").args(&options).args([
            "-o",
            "APT::Sandbox::User=root",
            "-q",
            "update",
        ]));
        updated.map_err(|_| ImageError::Download {
            package: package.to_owned(),
            source: first,
        })?;
        step.set_message("apt-get download");
        download().map_err(|source| ImageError::Download {
            package: package.to_owned(),
            source,
        })?;
    }
    let deb = find_deb(staging.path(), package)?.ok_or_else(|| ImageError::Download {
        package: package.to_owned(),
        source: CommandError::BadOutput {
            program: "apt-get download".into(),
            detail: "no .deb file appeared".into(),
        },
    })?;
    fs::create_dir_all(cache_dir).map_err(ImageError::io(cache_dir))?;
    let name = deb.file_name().expect("a found .deb has a file name");
    let dest = cache_dir.join(name);
    fs::rename(&deb, &dest).map_err(ImageError::io(&dest))?;
    step.done();
    Ok(dest)
}

/// apt options that make `apt-get update` and `download` see only
/// `suite` (main) of the host's Debian mirror, with the index kept under
/// the data directory.
fn suite_options(layout: &Layout, suite: &str) -> Result<Vec<String>, ImageError> {
    let root = layout
        .deb_cache()
        .parent()
        .map_or_else(|| layout.deb_cache(), |c| c.join(format!("apt-{suite}")));
    let parts = root.join("sources.list.d");
    for dir in [
        &parts,
        &root.join("lists/partial"),
        &root.join("archives/partial"),
    ] {
        fs::create_dir_all(dir).map_err(ImageError::io(dir))?;
    }
    let mirror = host_mirror(&read_host_sources());
    let sources = parts.join(format!("{suite}.sources"));
    let text = format!(
        "Types: deb\nURIs: {mirror}\nSuites: {suite}\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    );
    fs::write(&sources, text).map_err(ImageError::io(&sources))?;
    let opt = |k: &str, v: &Path| ["-o".to_owned(), format!("{k}={}", v.display())];
    let mut o = Vec::new();
    o.extend(opt("Dir::Etc::SourceList", Path::new("/dev/null")));
    o.extend(opt("Dir::Etc::SourceParts", &parts));
    o.extend(opt("Dir::State::Lists", &root.join("lists")));
    o.extend(opt("Dir::Cache", &root));
    Ok(o)
}

/// The host's apt source files' text (one-line and deb822 formats).
fn read_host_sources() -> String {
    let mut text = fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        for entry in dir.flatten() {
            text.push('\n');
            text.push_str(&fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    text
}

/// The first Debian archive (not security) mirror in the host's apt
/// sources, or `deb.debian.org`.
fn host_mirror(sources: &str) -> String {
    sources
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(str::split_whitespace)
        .map(|w| w.trim_end_matches('/'))
        .find(|w| (w.starts_with("http://") || w.starts_with("https://")) && w.ends_with("/debian"))
        .unwrap_or("http://deb.debian.org/debian")
        .to_owned()
}

fn cached(cache_dir: &Path, package: &str) -> Result<Option<PathBuf>, ImageError> {
    if !cache_dir.exists() {
        return Ok(None);
    }
    find_deb(cache_dir, package)
}

/// The newest-named `<package>_*.deb` in `dir`.
fn find_deb(dir: &Path, package: &str) -> Result<Option<PathBuf>, ImageError> {
    let prefix = format!("{package}_");
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(ImageError::io(dir))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .collect();
    found.sort();
    Ok(found.pop())
}

pub(crate) fn apt_update() -> Result<(), CommandError> {
    cmd::run(Command::new("apt-get").args(["-q", "update"])).map(drop)
}

/// The package `meta` depends on (e.g. `linux-image-cloud-amd64` ->
/// `linux-image-6.1.0-48-cloud-amd64`), from the local package index,
/// refreshing the index once if it knows nothing.
pub(crate) fn resolve_dependency(meta: &str, prefix: &str) -> Result<String, ImageError> {
    let query = || -> Result<Option<String>, CommandError> {
        let out = cmd::stdout(Command::new("apt-cache").args(["depends", meta]))?;
        Ok(first_dependency(&out, prefix))
    };
    if let Ok(Some(dep)) = query() {
        return Ok(dep);
    }
    apt_update().map_err(|e| ImageError::Resolve {
        package: meta.to_owned(),
        detail: format!("apt-get update failed: {e}"),
    })?;
    match query() {
        Ok(Some(dep)) => Ok(dep),
        Ok(None) => Err(ImageError::Resolve {
            package: meta.to_owned(),
            detail: format!("no dependency named {prefix}*"),
        }),
        Err(e) => Err(ImageError::Resolve {
            package: meta.to_owned(),
            detail: e.to_string(),
        }),
    }
}

/// Picks the first `Depends:` line naming a package that starts with `prefix`.
pub(crate) fn first_dependency(apt_cache_depends: &str, prefix: &str) -> Option<String> {
    apt_cache_depends.lines().find_map(|line| {
        let value = line
            .trim()
            .trim_start_matches('|')
            .strip_prefix("Depends:")?;
        let name = value.trim().trim_start_matches('<').trim_end_matches('>');
        name.starts_with(prefix).then(|| name.to_owned())
    })
}

/// Unpacks a `.deb`'s files into `dest` (created if needed).
pub(crate) fn unpack(deb: &Path, dest: &Path) -> Result<(), ImageError> {
    fs::create_dir_all(dest).map_err(ImageError::io(dest))?;
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dest))
        .map(drop)
        .map_err(|source| ImageError::Unpack {
            deb: deb.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependency_is_read_from_apt_cache_output() {
        let out = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-48-cloud-amd64\n  Recommends: foo\n";
        assert_eq!(
            first_dependency(out, "linux-image-").as_deref(),
            Some("linux-image-6.1.0-48-cloud-amd64")
        );
        let alt = "x\n |Depends: <linux-image-6.1.0-1-cloud-amd64>\n  Depends: linux-image-6.1.0-2-cloud-amd64\n";
        assert_eq!(
            first_dependency(alt, "linux-image-").as_deref(),
            Some("linux-image-6.1.0-1-cloud-amd64")
        );
        assert_eq!(
            first_dependency("x\n  Depends: libc6\n", "linux-image-"),
            None
        );
    }

    #[test]
    fn the_hosts_debian_mirror_is_found() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\n";
        assert_eq!(host_mirror(deb822), "http://mirror.example/debian");
        let one_line = "# deb http://old.example/debian bookworm main\ndeb http://deb.debian.org/debian-security bookworm-security main\ndeb https://m.example/debian bookworm main\n";
        assert_eq!(host_mirror(one_line), "https://m.example/debian");
        assert_eq!(host_mirror(""), "http://deb.debian.org/debian");
    }

    #[test]
    fn newest_named_deb_is_found() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "busybox-static_1.30_amd64.deb",
            "busybox-static_1.35_amd64.deb",
            "busybox_1.99_amd64.deb",
            "busybox-static_2.0.txt",
        ] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        let found = find_deb(dir.path(), "busybox-static").unwrap().unwrap();
        assert!(
            found.ends_with("busybox-static_1.35_amd64.deb"),
            "{found:?}"
        );
        assert_eq!(find_deb(dir.path(), "hello").unwrap(), None);
    }
}
