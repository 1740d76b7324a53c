"""Snapshots — save and fork state.

Documentation: "A snapshot freezes the entire VM state (memory + disk). You
can restore the same sandbox to an earlier state, or create a branch by
restoring into a new sandbox."

Memory is observed through a background process holding, only in its
memory, a random token drawn at start and a counter bumped by SIGUSR2; on
SIGUSR1 it reports `pid token counter` (see `MemProbe`). The same pid,
token and counter after a restore mean the very process came back, not a
new one started again.
"""

from conftest import PROBE_SRC, MemProbe, wait_for

def snapshot(sbx, comment):
    snap = sbx.snapshots.create(comment)
    assert snap.id.startswith("snap_") and snap.sandbox_id == sbx.id
    wait_for("snapshot %s ready" % snap.id, lambda: sbx.snapshots.get(snap.id).status == "ready", timeout=60.0)
    return snap


def read_text(sbx, path):
    r = sbx.exec.run("cat %s" % path)
    return r.stdout if r.exit_code == 0 else None


def test_a_snapshot_freezes_the_entire_vm_state_memory_and_disk(new):
    """"A snapshot freezes the entire VM state (memory + disk)."

    After the snapshot the process is killed and the file deleted, so
    nothing of that state is left in the sandbox; restoring the snapshot
    brings back both: the very process (same pid, same random token, the
    counter it had in memory) and the file."""
    s = new()
    probe = MemProbe(s)
    mem = probe.bump()
    s.files.write("/workspace/frozen.txt", "disk at snapshot time\n")
    snap = snapshot(s, "memory and disk")
    assert s.state == "running" and s.refresh().state == "running"  # the sandbox keeps running

    wipe = s.exec.run("kill -9 %d; rm -f /workspace/frozen.txt /tmp/memprobe.py" % mem[0], user="root")
    assert wipe.exit_code == 0, wipe.stderr
    wait_for("the probe to be gone", lambda: probe.read() is None, timeout=10.0)
    assert read_text(s, "/workspace/frozen.txt") is None

    s.snapshots.restore(snap.id)
    assert s.state == "running"
    assert probe.read() == mem
    assert read_text(s, "/workspace/frozen.txt") == "disk at snapshot time\n"
    assert read_text(s, "/tmp/memprobe.py") == PROBE_SRC


def test_restore_the_same_sandbox_to_an_earlier_state(client, new):
    """"You can restore the same sandbox to an earlier state": restore in
    place keeps the sandbox's id, and memory and disk roll back to the
    snapshot; what changed after it (a counter bumped, a file rewritten, a
    file created) is gone."""
    s = new()
    probe = MemProbe(s)
    earlier = probe.bump()
    s.files.write("/workspace/state.txt", "earlier\n")
    snap = snapshot(s, "earlier")

    later = probe.bump()
    assert later == (earlier[0], earlier[1], earlier[2] + 1)
    s.files.write("/workspace/state.txt", "later\n")
    s.files.write("/workspace/made-later.txt", "x")

    restored = s.snapshots.restore(snap.id)
    assert restored.id == s.id
    got = client.sandboxes.get(s.id)
    assert got.id == s.id and got.state == "running"
    assert probe.read() == earlier
    assert read_text(s, "/workspace/state.txt") == "earlier\n"
    assert not s.files.exists("/workspace/made-later.txt")
    # The sandbox goes on from there.
    assert probe.bump() == (earlier[0], earlier[1], earlier[2] + 1)


def test_create_a_branch_by_restoring_into_a_new_sandbox(client, new, api):
    """"...or create a branch by restoring into a new sandbox": `fork`
    with the snapshot's id (and `restore` with `as_new`) make a new
    sandbox with the snapshot's memory and disk, while the source keeps
    its own later state; the branch and the source then change
    independently."""
    s = new()
    probe = MemProbe(s)
    at_snap = probe.bump()
    s.files.write("/workspace/state.txt", "at snapshot\n")
    snap = snapshot(s, "branch point")
    source_later = probe.bump()
    s.files.write("/workspace/state.txt", "source later\n")

    branches = []
    try:
        fork = s.fork(snapshot_id=snap.id)
        branches.append(fork)
        r = api.post("/sandboxes/%s/restore/%s" % (s.id, snap.id), json={"as_new": True})
        assert r.status_code in (200, 201), r.text
        as_new = client.sandboxes.get(r.json()["data"]["id"])
        branches.append(as_new)

        for b in branches:
            assert b.id != s.id and b.state == "running"
            assert MemProbe(b, start=False).read() == at_snap
            assert read_text(b, "/workspace/state.txt") == "at snapshot\n"

        # The source is untouched by the branching...
        assert client.sandboxes.get(s.id).state == "running"
        assert probe.read() == source_later
        assert read_text(s, "/workspace/state.txt") == "source later\n"
        # ...and a branch's changes stay in the branch.
        fork.files.write("/workspace/state.txt", "fork's own\n")
        assert read_text(s, "/workspace/state.txt") == "source later\n"
        assert read_text(as_new, "/workspace/state.txt") == "at snapshot\n"
    finally:
        for b in branches:
            b.destroy()
