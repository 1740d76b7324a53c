//! `hearth sandbox shell` as a real binary against a real `hearth serve`
//! with a real QEMU VM: piped input, a real local terminal (its size, a
//! window resize, raw mode and its restoration), and a missing sandbox.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::termios::{tcgetattr, LocalFlags};
use serde_json::json;

/// How long any one step (a VM answering, the CLI exiting) may take under
/// TCG emulation before the test fails.
const STEP: Duration = Duration::from_secs(90);

nix::ioctl_write_ptr_bad!(tiocswinsz, nix::libc::TIOCSWINSZ, nix::libc::winsize);

/// A running `minimal` sandbox (256 MB); its id.
async fn sandbox(server: &Server, api: &Api) -> String {
    let spec = json!({"template_id": "minimal", "memory_mb": 256, "disk_size_mb": 512, "timeout_sec": 900});
    let (st, v) = api.call("POST", "/sandboxes", Some(spec)).await;
    assert_eq!(st, 201, "create: {v}\n{}", server.log());
    let id = v["data"]["id"].as_str().expect("sandbox id").to_string();
    api.wait_state(&id, "running", STEP).await;
    id
}

/// Waits for `child` to exit within `within`; kills it and fails if not.
fn wait_exit(child: &mut Child, within: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: the CLI did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `hearth sandbox shell ID` with `script` piped in: (exit code, stdout,
/// stderr).
fn piped(api: &Api, id: &str, script: &[u8]) -> (Option<i32>, String, String) {
    piped_into(api, &["sandbox", "shell", id], script)
}

/// `hearth ARGS` with `script` piped in: (exit code, stdout, stderr).
fn piped_into(api: &Api, args: &[&str], script: &[u8]) -> (Option<i32>, String, String) {
    let mut child = Command::new(HEARTH)
        .args(args)
        .env("HEARTH_BASE_URL", &api.base)
        .env("HEARTH_API_KEY", &api.key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hearth sandbox shell");
    // Readers first, so a chatty CLI never blocks on a full pipe.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    // End of input comes before the shell has even started: the CLI must
    // keep reading until the shell exits. Written from a thread, so a CLI
    // that stops reading cannot hold the test past its deadline; one that
    // exits before reading it all (the shell ended first) is fine.
    let mut stdin = child.stdin.take().expect("stdin");
    let script = script.to_vec();
    let writer = std::thread::spawn(move || match stdin.write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("write the script: {e}"),
        _ => {}
    });
    let status = wait_exit(&mut child, STEP, "piped shell");
    writer.join().expect("script writer");
    let out = out.join().expect("stdout reader");
    let err = err.join().expect("stderr reader");
    (
        status.code(),
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots real VMs; run with --run-ignored (scripts/test does)"]
async fn a_piped_shell_runs_the_script_and_ends_with_its_exit() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (server, api) = fresh_server(tmp.path()).await;
    let id = sandbox(&server, &api).await;

    let (code, out, err) = tokio::task::block_in_place(|| {
        piped(
            &api,
            &id,
            b"echo hello-$((6*7))\necho oops-$((1+2)) >&2\nexit 5\necho never\n",
        )
    });
    // As `ssh host < script`: no terminal, so no prompt and no echo of the
    // script, and stdout and stderr stay apart.
    assert_eq!(out, "hello-42\n", "stderr: {err}");
    assert_eq!(err, "oops-3\n", "stdout: {out:?}");
    // The shell's exit code comes back.
    assert_eq!(code, Some(5), "stdout: {out:?}\nstderr: {err}");

    // Input that ends without an `exit` still ends the shell: the end of
    // the input is the end of its stdin.
    let (code, out, err) =
        tokio::task::block_in_place(|| piped(&api, &id, b"echo no-$((1+1))-exit\n"));
    assert_eq!(out, "no-2-exit\n", "stderr: {err}");
    assert_eq!(code, Some(0), "stdout: {out:?}\nstderr: {err}");

    // A shell that exits with input left unread (more than a pipe holds,
    // so writes after its exit fail) ends with its own code, and that is
    // no error.
    let mut script = b"echo early\nexit 3\n".to_vec();
    script.extend(b"echo unread\n".repeat(20_000));
    let (code, out, err) = tokio::task::block_in_place(|| piped(&api, &id, &script));
    assert_eq!(out, "early\n", "stderr: {err}");
    assert_eq!(err, "", "stdout: {out:?}");
    assert_eq!(code, Some(3), "stdout: {out:?}\nstderr: {err}");

    // A shell that closes its stdin and goes on working is let be: the
    // input it refuses is not a failure to stop it for.
    let mut script = b"exec 0<&-; sleep 3; echo done-$((4*5)); exit\n".to_vec();
    script.extend(b"echo unread\n".repeat(20_000));
    let (code, out, err) = tokio::task::block_in_place(|| piped(&api, &id, &script));
    assert_eq!(out, "done-20\n", "stderr: {err}");
    assert!(!err.contains("hearth"), "stdout: {out:?}\nstderr: {err}");
    assert_eq!(code, Some(0), "stdout: {out:?}\nstderr: {err}");

    // The sandbox is still fine for the next caller.
    let r = api.exec(&id, "echo after").await;
    assert_eq!(r["stdout"], "after\n", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots real VMs; run with --run-ignored (scripts/test does)"]
async fn piped_input_that_arrives_before_a_slow_shell_starts_still_ends_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (server, api) = fresh_server(tmp.path()).await;
    let id = sandbox(&server, &api).await;
    // A login shell that takes a second to start (a heavy profile, a
    // loaded host): the whole script, and its end, are there before it.
    let r = api
        .exec(
            &id,
            "printf '#!/bin/sh\\nsleep 1\\nexec sh -l\\n' > /tmp/slowsh && chmod +x /tmp/slowsh",
        )
        .await;
    assert_eq!(r["exit_code"], 0, "{r}");

    let (code, out, err) = tokio::task::block_in_place(|| {
        piped_into(
            &api,
            &["sandbox", "shell", &id, "--shell", "/tmp/slowsh"],
            b"echo slow-$((2+3))\n",
        )
    });
    assert!(out.contains("slow-5"), "stdout: {out:?}\nstderr: {err}");
    assert_eq!(code, Some(0), "stdout: {out:?}\nstderr: {err}");
}

/// Terminal output read on a thread of its own, so every wait has a
/// deadline instead of a blocking read.
struct Screen {
    rx: mpsc::Receiver<Vec<u8>>,
    seen: String,
}

impl Screen {
    fn new(master: OwnedFd) -> Screen {
        let (tx, rx) = mpsc::channel();
        let mut master = std::fs::File::from(master);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once no process has the slave open.
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
        Screen {
            rx,
            seen: String::new(),
        }
    }

    /// Reads until the output since the last match holds `needle`; false
    /// after `within` without it.
    fn wait_for(&mut self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if let Some(at) = self.seen.find(needle) {
                self.seen.drain(..at + needle.len());
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(chunk) => self.seen.push_str(&String::from_utf8_lossy(&chunk)),
                Err(_) => return false,
            }
        }
    }

    /// Reads until any output arrives.
    fn wait_any(&mut self, within: Duration) -> bool {
        if !self.seen.is_empty() {
            return true;
        }
        match self.rx.recv_timeout(within) {
            Ok(chunk) => {
                self.seen.push_str(&String::from_utf8_lossy(&chunk));
                true
            }
            Err(_) => false,
        }
    }
}

fn set_size(master: &std::fs::File, cols: u16, rows: u16) {
    let ws = nix::libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` through the pointer, which
    // points at a live local; the fd is the open master.
    unsafe { tiocswinsz(master.as_raw_fd(), &ws) }.expect("TIOCSWINSZ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots real VMs; run with --run-ignored (scripts/test does)"]
async fn a_terminal_shell_follows_the_local_window_size_and_restores_the_terminal() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (server, api) = fresh_server(tmp.path()).await;
    let id = sandbox(&server, &api).await;

    tokio::task::block_in_place(|| {
        let size = nix::pty::Winsize {
            ws_row: 30,
            ws_col: 100,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
        // Kept to look at the terminal's modes; it also keeps the master
        // readable (no EIO) after the CLI exits.
        let probe = pty.slave.try_clone().expect("dup slave");
        let cooked = tcgetattr(&probe).expect("tcgetattr");
        assert!(cooked
            .local_flags
            .contains(LocalFlags::ICANON | LocalFlags::ECHO));

        let mut child = {
            let mut cmd = Command::new(HEARTH);
            cmd.args(["sandbox", "shell", &id])
                .env("HEARTH_BASE_URL", &api.base)
                .env("HEARTH_API_KEY", &api.key)
                .stdin(Stdio::from(pty.slave.try_clone().expect("dup slave")))
                .stdout(Stdio::from(pty.slave.try_clone().expect("dup slave")))
                .stderr(Stdio::from(pty.slave));
            cmd.spawn().expect("spawn hearth sandbox shell")
            // The command, and the parent's copies of the slave with it,
            // are dropped here.
        };
        let mut input = std::fs::File::from(pty.master.try_clone().expect("dup master"));
        let mut screen = Screen::new(pty.master);

        // The prompt: the CLI is attached and has set up the terminal.
        assert!(
            screen.wait_any(STEP),
            "no prompt from the shell\n{}",
            server.log()
        );
        let raw = tcgetattr(&probe).expect("tcgetattr");
        assert!(
            !raw.local_flags
                .intersects(LocalFlags::ICANON | LocalFlags::ECHO),
            "the local terminal is not in raw mode during the session"
        );

        input.write_all(b"stty size\n").expect("type");
        assert!(
            screen.wait_for("30 100", STEP),
            "the remote terminal did not start at 100x30: {:?}",
            screen.seen
        );

        set_size(&input, 120, 40);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
            nix::sys::signal::Signal::SIGWINCH,
        )
        .expect("SIGWINCH");
        // The resize and the typing race (a signal against a pipe), so ask
        // again until the new size shows or the deadline passes.
        let deadline = Instant::now() + STEP;
        let mut resized = false;
        while !resized && Instant::now() < deadline {
            input.write_all(b"stty size\n").expect("type");
            resized = screen.wait_for("40 120", Duration::from_secs(10));
        }
        assert!(
            resized,
            "the remote terminal did not follow the resize to 120x40: {:?}",
            screen.seen
        );

        input.write_all(b"exit\n").expect("type");
        let status = wait_exit(&mut child, STEP, "terminal shell");
        assert_eq!(status.code(), Some(0), "output: {:?}", screen.seen);
        let after = tcgetattr(&probe).expect("tcgetattr");
        assert!(
            after
                .local_flags
                .contains(LocalFlags::ICANON | LocalFlags::ECHO),
            "the local terminal was left in raw mode"
        );
        assert!(!screen.seen.contains("panicked"), "{:?}", screen.seen);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots real VMs; run with --run-ignored (scripts/test does)"]
async fn a_shell_into_a_missing_sandbox_is_a_one_line_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (_server, api) = fresh_server(tmp.path()).await;
    let (code, out, err) =
        tokio::task::block_in_place(|| hearth(&api, &["sandbox", "shell", "sbx_nope"]));
    assert_eq!(code, 1, "stdout: {out:?}\nstderr: {err:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    assert!(err.contains("sandbox sbx_nope not found"), "{err:?}");
    assert!(!err.contains("panicked"), "{err:?}");
    assert!(out.is_empty(), "{out:?}");
}
