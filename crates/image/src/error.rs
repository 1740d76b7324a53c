//! Errors of the image builder. Each variant names the step that failed; the
//! wrapped cause (an I/O error or a failed command) is the `source()`.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

/// A failed build step.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("i/o on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("resolve package {package}: {detail}")]
    Resolve { package: String, detail: String },
    #[error("download package {package}")]
    Download {
        package: String,
        #[source]
        source: CommandError,
    },
    #[error("unpack {deb}")]
    Unpack {
        deb: PathBuf,
        #[source]
        source: CommandError,
    },
    #[error("kernel package {package} is missing {what}")]
    KernelLayout { package: String, what: String },
    #[error("depmod for kernel {version}")]
    Depmod {
        version: String,
        #[source]
        source: CommandError,
    },
    #[error("module {module} is neither in modules.dep nor built into kernel {version}")]
    MissingModule { module: String, version: String },
    #[error("module dependency cycle through {module}")]
    ModuleCycle { module: String },
    #[error("list busybox applets")]
    BusyboxApplets {
        #[source]
        source: CommandError,
    },
    #[error("mkfs.ext4 {path}")]
    Mkfs {
        path: PathBuf,
        #[source]
        source: CommandError,
    },
    #[error("debootstrap failed (log kept at {log}); last lines:\n{log_tail}")]
    Debootstrap {
        log: PathBuf,
        log_tail: String,
        #[source]
        source: CommandError,
    },
    #[error("customize rootfs: {step}")]
    Customize {
        step: String,
        #[source]
        source: CommandError,
    },
    #[error("build the static agent")]
    AgentBuild {
        #[source]
        source: CommandError,
    },
    #[error("agent binary {path} does not exist")]
    AgentMissing { path: PathBuf },
    #[error("write manifest {path}")]
    Manifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("copy {src} to {dst}")]
    Copy {
        src: PathBuf,
        dst: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ImageError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io { path, source }
    }
}

/// An external program that could not run or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("could not start {program}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{program} {status}{}", colon_prefixed(.output_tail))]
    Failed {
        program: String,
        status: ExitStatus,
        /// The last lines the program printed (stderr, else stdout).
        output_tail: String,
    },
    #[error("{program} printed nothing usable: {detail}")]
    BadOutput { program: String, detail: String },
}

fn colon_prefixed(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    }
}
