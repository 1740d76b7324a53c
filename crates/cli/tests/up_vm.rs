//! `hearth up` as a user runs it: the real binary, its own server on a
//! free port, the demo through the REST API on real VMs; and the machine
//! problems it must explain instead of failing halfway (no root, a data
//! directory it cannot write, a small disk).

mod common;

use std::process::{Command, Stdio};

use common::*;

/// `hearth up ARGS...` with a fresh data directory over the shared image
/// cache: (exit code, stdout, stderr).
fn up(data: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(HEARTH)
        .arg("up")
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .arg("--images-dir")
        .arg(images_dir())
        .args(args)
        .env("HEARTH_PREVIEW_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .output()
        .expect("run hearth up");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
#[ignore = "boots real VMs; run with --run-ignored (scripts/test does)"]
fn up_serves_and_runs_the_demo_through_the_api_on_real_vms() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let (code, out, err) = up(
        &data,
        &["--exit-after-demo", "--run", "echo extra-$((6*7))"],
    );
    let vms_left = || {
        std::fs::read_dir(data.join("sandboxes"))
            .map(|d| d.flatten().count())
            .unwrap_or(0)
    };
    let left = vms_left();
    kill_vms(&data);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");

    // The URL and the key a newcomer needs, and the key really is the
    // server's admin key.
    assert!(
        out.contains("hearth listening on http://127.0.0.1:"),
        "{out}"
    );
    let key = std::fs::read_to_string(data.join("admin.key")).expect("admin.key");
    assert!(
        out.contains(&format!(
            "admin key (shown once; also in {}",
            data.join("admin.key").display()
        )),
        "{out}"
    );
    assert!(out.contains(key.trim()), "{out}");

    // The demo ran in a real Debian guest: Python answered with the
    // sandbox's own hostname, the file came back, the extra command ran.
    let created = out
        .lines()
        .find_map(|l| l.strip_prefix("sandbox "))
        .and_then(|l| l.split_whitespace().next())
        .expect("a `sandbox <id> is running` line");
    assert!(created.starts_with("sbx_"), "{out}");
    assert!(
        out.contains(&format!("sandbox {created} is running: ")),
        "{out}"
    );
    // The template snapshot was written at start (or found beside the
    // shared images): the demo's sandbox restores it.
    assert!(
        out.contains("(snapshot boot)"),
        "the demo sandbox is not a clone: {out}\n--- stderr ---\n{err}"
    );
    assert!(
        out.contains("hello from Python 3.11") && out.contains(&created.replace('_', "-")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "file /workspace/hello.txt: written by hearth up into {created}"
        )),
        "{out}"
    );
    assert!(
        out.contains("$ echo extra-$((6*7))  (exit 0)\nextra-42"),
        "{out}"
    );
    assert!(out.contains("demo done: sandboxes destroyed"), "{out}");
    // Progress went to stderr, one line per step.
    assert!(
        err.contains("up: writing the `default` template snapshot ... done in"),
        "{err}"
    );
    assert!(
        err.contains("up: creating a `default` sandbox ... done in"),
        "{err}"
    );
    // Nothing is left running: the demo sandbox was destroyed.
    assert_eq!(left, 0, "demo sandboxes left behind");
}

#[test]
#[ignore = "mounts a tmpfs (root); run with --run-ignored (scripts/test does)"]
fn up_on_a_small_disk_says_how_much_space_it_needs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let disk = SmallDisk::mount(&tmp.path().join("small"), 200);
    let (code, out, err) = up(
        &disk.0.join("data"),
        &["--template", "minimal", "--exit-after-demo"],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("hearth up cannot run on this machine yet"),
        "{err}"
    );
    assert!(err.contains("0.2 GiB free, 1.0 GiB needed"), "{err}");
    assert!(err.contains("--data-dir on a larger filesystem"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.contains("hearth listening"), "nothing starts: {out}");
}

#[test]
#[ignore = "runs as user nobody (needs root to switch); run with --run-ignored (scripts/test does)"]
fn up_without_root_names_each_problem_and_its_fix() {
    let tmp = tempfile::tempdir().expect("tmp");
    // A data directory only root may write, and an image cache with no
    // Debian image: the default template would need debootstrap (root).
    let locked = tmp.path().join("locked");
    std::fs::create_dir_all(locked.join("images")).expect("mkdir");
    for p in [tmp.path(), &locked] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(HEARTH)
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(locked.join("data"))
        .arg("--images-dir")
        .arg(locked.join("images"))
        .env("HEARTH_PREVIEW_LISTEN", "127.0.0.1:0")
        .output()
        .expect("setpriv hearth up");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("needs root (debootstrap): run `sudo hearth up` once"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "cannot write to the data directory {}",
            locked.join("data").display()
        )),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
