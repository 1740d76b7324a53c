//! Locating the statically linked guest agent that goes into the initramfs
//! (as `/init`) and the minimal rootfs.

use std::path::{Path, PathBuf};
use std::process::Command;

use parking_lot::Mutex;

use crate::cmd;
use crate::error::{CommandError, ImageError};
use crate::progress::Step;

/// Names a prebuilt static agent, skipping the build.
pub const AGENT_ENV: &str = "HEARTH_AGENT_STATIC";

/// The static agent: `$HEARTH_AGENT_STATIC` when set, else the output of the
/// workspace's `scripts/build-agent-static` (a cargo build, cached by cargo;
/// minutes the first time). The result is remembered for the process.
pub fn static_agent_binary() -> Result<PathBuf, ImageError> {
    if let Some(path) = std::env::var_os(AGENT_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(ImageError::AgentMissing { path })
        };
    }
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock();
    if let Some(path) = built.as_ref().filter(|p| p.is_file()) {
        return Ok(path.clone());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-agent-static");
    let step = Step::start("building static agent");
    let stdout = cmd::stdout(&mut Command::new(&script))
        .map_err(|source| ImageError::AgentBuild { source })?;
    let path = stdout
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| ImageError::AgentBuild {
            source: CommandError::BadOutput {
                program: script.display().to_string(),
                detail: "no path printed".into(),
            },
        })?;
    if !path.is_file() {
        return Err(ImageError::AgentMissing { path });
    }
    step.done();
    *built = Some(path.clone());
    Ok(path)
}
