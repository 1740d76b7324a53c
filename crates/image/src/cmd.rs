//! Running the host tools the builder relies on (apt-get, dpkg-deb, depmod,
//! mkfs.ext4, debootstrap, chroot) with their output captured for errors.

use std::process::{Command, Output, Stdio};

use crate::error::CommandError;

/// How many trailing lines of a failed program's output go into its error.
const TAIL_LINES: usize = 15;

/// A short name for error messages: the program and its first argument
/// (`apt-get download`, `chroot /tmp/...`).
pub(crate) fn describe(cmd: &Command) -> String {
    let mut name = cmd.get_program().to_string_lossy().into_owned();
    if let Some(first) = cmd.get_args().next() {
        name.push(' ');
        name.push_str(&first.to_string_lossy());
    }
    name
}

/// Runs `cmd` to completion with stdin closed and its output captured;
/// success means exit status 0.
pub(crate) fn run(cmd: &mut Command) -> Result<Output, CommandError> {
    let program = describe(cmd);
    tracing::debug!(command = ?cmd, "running");
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| CommandError::Spawn {
            program: program.clone(),
            source,
        })?;
    if output.status.success() {
        Ok(output)
    } else {
        let text = if output.stderr.iter().any(|b| !b.is_ascii_whitespace()) {
            &output.stderr
        } else {
            &output.stdout
        };
        Err(CommandError::Failed {
            program,
            status: output.status,
            output_tail: tail(&String::from_utf8_lossy(text), TAIL_LINES),
        })
    }
}

/// Runs `cmd` and returns its stdout as text.
pub(crate) fn stdout(cmd: &mut Command) -> Result<String, CommandError> {
    let output = run(cmd)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The last `lines` non-empty lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let kept: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = kept.len().saturating_sub(lines);
    kept[start..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_command_reports_stderr_tail() {
        let err = run(Command::new("sh").args(["-c", "echo out; echo bad >&2; exit 3"]))
            .expect_err("exit 3 is a failure");
        match err {
            CommandError::Failed {
                program,
                status,
                output_tail,
            } => {
                assert_eq!(program, "sh -c");
                assert_eq!(status.code(), Some(3));
                assert_eq!(output_tail, "bad");
            }
            other => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = run(&mut Command::new("/nonexistent/hearth-tool")).expect_err("no such program");
        assert!(matches!(err, CommandError::Spawn { .. }), "{err:?}");
    }

    #[test]
    fn tail_keeps_last_non_empty_lines() {
        assert_eq!(tail("a\n\nb\nc\n\n", 2), "b\nc");
        assert_eq!(tail("", 3), "");
    }
}
