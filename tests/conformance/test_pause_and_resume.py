"""Pause and resume.

Documentation: "pause() and resume() give you explicit control over the
running ↔ paused transition without destroying state." Lifecycle table:
"running | Ready — exec, files, previews all work" and "paused |
Snapshotted; resume() restores full state in ~200 ms".

Memory is observed as in test_snapshots.py: a background process holding
a random token and a counter in memory only (`MemProbe`, repeated here so
the files stay independent).
"""

import pytest

from hearth import ConflictError

from conftest import MemProbe

def test_pause_and_resume_control_the_running_paused_transition(client, new):
    """"pause() and resume() give you explicit control over the running ↔
    paused transition": running, then `paused` once `pause()` returns (also
    as seen by a fresh GET, with `paused_at` set), then `running` again once
    `resume()` returns; the id stays the same, and the transition can be
    made again."""
    s = new()
    assert s.state == "running"
    for _ in range(2):
        assert s.pause().state == "paused"
        got = client.sandboxes.get(s.id)
        assert got.state == "paused" and got.paused_at
        assert s.resume().state == "running"
        got = client.sandboxes.get(s.id)
        assert got.id == s.id and got.state == "running"
        assert s.exec.run("echo back").stdout == "back\n"


def test_pause_and_resume_do_not_destroy_state(new):
    """"...without destroying state": a process running before the pause
    is the same process after the resume (same pid, the token and counter
    it held in memory), its process record still says running, and files
    written before the pause are there."""
    s = new()
    probe = MemProbe(s)
    mem = probe.bump()
    s.files.write("/workspace/kept.txt", "written before the pause\n")
    s.exec.run("mkdir -p /workspace/dir && echo nested > /workspace/dir/n.txt")

    s.pause()
    s.resume()

    assert probe.read() == mem
    assert s.processes.get(probe.process.pid).state == "running"
    assert s.files.read_text("/workspace/kept.txt") == "written before the pause\n"
    assert s.files.read_text("/workspace/dir/n.txt") == "nested\n"
    # And the process carries on from where it was.
    assert probe.bump() == (mem[0], mem[1], mem[2] + 1)


def test_exec_is_refused_while_paused_and_works_after_resume(new):
    """"running | Ready — exec, files, previews all work": a paused sandbox
    is not running, so exec (and a file write) is refused with a clear
    error: 409 `sandbox_not_running` naming the state; after `resume()` it
    works again."""
    s = new()
    s.pause()
    with pytest.raises(ConflictError) as ei:
        s.exec.run("echo hi")
    e = ei.value
    assert e.status == 409 and e.code == "sandbox_not_running"
    assert "paused" in e.message
    with pytest.raises(ConflictError) as ei:
        s.files.write("/workspace/x.txt", "x")
    assert ei.value.status == 409 and ei.value.code == "sandbox_not_running"

    s.resume()
    r = s.exec.run("echo hi")
    assert (r.exit_code, r.stdout) == (0, "hi\n")


def test_paused_is_snapshotted_and_resume_restores_from_the_snapshot(client, new):
    """"paused | Snapshotted; resume() restores full state": the sandbox's
    `boot_path` after `resume()` is `snapshot` (it came back from the
    snapshot taken at pause, not from a fresh boot: the guest kernel's
    boot id is the one from before the pause) and `boot_ms` says how long
    that took."""
    s = new()
    boot_id = s.exec.run("cat /proc/sys/kernel/random/boot_id").stdout.strip()
    s.pause()
    assert client.sandboxes.get(s.id).state == "paused"
    s.resume()
    assert s.boot_path == "snapshot"
    assert isinstance(s.boot_ms, int) and s.boot_ms >= 0
    assert client.sandboxes.get(s.id).boot_path == "snapshot"
    # The same kernel (not a fresh boot): its boot id is unchanged.
    assert s.exec.run("cat /proc/sys/kernel/random/boot_id").stdout.strip() == boot_id
