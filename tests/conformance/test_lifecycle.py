"""Documentation section "Lifecycle" (states, `last_error`, the idle clock)
and the timeouts of "What a Sandbox is" and "Sizing reference"."""

import threading
import time

import pytest

from conftest import preview_get, serve_http, state_of, wait_for, wait_state
from hearth import HearthError

# Short idle timeouts keep these tests quick; activity comes every
# ACTIVITY_EVERY s for longer than IDLE s, so only a reset clock survives.
IDLE = 6
ACTIVITY_EVERY = 2
ACTIVE_FOR = 12


def test_provisioning_while_the_vm_boots_then_running(client, new):
    """"provisioning | VM is booting from the template snapshot", then
    "running | Ready"."""
    s = new(wait=False)
    assert s.state == "provisioning"
    wait_state(client, s.id, "running", timeout=60)
    s.refresh()
    assert s.boot_path == "snapshot" and s.boot_ms is not None


def test_running_exec_files_previews_all_work(sbx):
    """"running | Ready — exec, files, previews all work"."""
    assert sbx.state == "running"
    assert sbx.exec.run("echo ready").stdout == "ready\n"
    sbx.files.write("/workspace/ready.txt", "yes")
    assert sbx.files.read_text("/workspace/ready.txt") == "yes"
    serve_http(sbx, 8000, "preview works")
    pv = sbx.previews.create(8000, visibility="public")
    assert wait_for("the preview", lambda: preview_get(pv.url).text == "preview works", timeout=20)


def test_destroyed_is_terminal_resources_freed_id_unusable(client, new):
    """"destroyed | Terminal — resources freed, ID unusable". The record
    stays readable (API.md); every operation on it is refused, nothing
    brings it back, and its VM process is gone."""
    s = new()
    vmm = s.exec.run("cat /proc/1/comm")  # a live guest before
    assert vmm.exit_code == 0
    s.destroy()
    assert state_of(client, s.id) == "destroyed"
    assert client.sandboxes.get(s.id).destroyed_at
    for op in (lambda: s.exec.run("true"), s.resume, s.pause, lambda: s.files.read("/etc/hostname")):
        with pytest.raises(HearthError) as e:
            op()
        assert e.value.status == 409, e.value
    # Destroy again is idempotent and changes nothing.
    assert s.destroy().state == "destroyed"


def kill_guest(sbx):
    """Crashes the guest from inside: the kernel powers off at once, so the
    VMM exits without Hearth asking it to."""
    try:
        sbx.exec.run("echo o > /proc/sysrq-trigger", user="root", timeout=5)
    except HearthError:
        pass  # the exec may die with its VM


def test_error_on_a_runtime_failure_with_last_error_in_metadata(client, new):
    """"error | Boot or runtime failure; check sbx.data["metadata"] for
    last_error"."""
    s = new()
    kill_guest(s)
    wait_state(client, s.id, "error", timeout=30)
    s.refresh()
    assert s.data["metadata"]["last_error"]
    assert "exited" in s.data["metadata"]["last_error"]
    with pytest.raises(HearthError) as e:
        s.exec.run("true")
    assert e.value.status == 409


def test_timeout_sec_destroys_at_the_wall_clock_deadline_even_with_activity(client, new):
    """"Auto-destroyed after timeout_sec of wall-clock time": activity does
    not move the deadline."""
    s = new(timeout_sec=6)
    started = time.monotonic()
    while time.monotonic() - started < 4:
        assert s.exec.run("true").exit_code == 0
        time.sleep(0.5)
    assert state_of(client, s.id) == "running"
    wait_state(client, s.id, "destroyed", timeout=10)
    elapsed = time.monotonic() - started
    assert 5 <= elapsed < 14, elapsed


def test_always_on_disables_timeout_sec(client, new):
    """"set always_on=True to disable" the timeout_sec destruction."""
    s = new(timeout_sec=2, always_on=True)
    time.sleep(5)
    assert state_of(client, s.id) == "running"
    assert s.exec.run("echo alive").stdout == "alive\n"


def test_idle_timeout_sec_destroys_directly_after_inactivity(client, new):
    """"Set idle_timeout_sec to auto-destroy after a period of inactivity",
    and "the sandbox transitions directly to destroyed" (no pause first)."""
    s = new(idle_timeout_sec=IDLE)
    started = time.monotonic()
    wait_state(client, s.id, "destroyed", timeout=IDLE + 15)
    assert time.monotonic() - started >= IDLE - 1
    types = [e.get("type") for e in s.events.list()]
    assert "sandbox.idle" in types
    assert "sandbox.paused" not in types, types


def test_idle_timeout_sec_pauses_a_persistent_sandbox__hearth_goes_further(client, new):
    """Hearth keeps a `persistent: true` sandbox: its idle timeout pauses it
    (as its `timeout_sec` does), so its state can be resumed later."""
    s = new(idle_timeout_sec=IDLE, persistent=True)
    s.files.write("/workspace/kept.txt", "kept")
    wait_state(client, s.id, "paused", timeout=IDLE + 15)
    s.resume()
    assert s.files.read_text("/workspace/kept.txt") == "kept"


def keeps_alive_while(client, sbx, activity):
    """Runs `activity` every ACTIVITY_EVERY s for ACTIVE_FOR s (twice the
    idle timeout): the sandbox must stay running throughout, then be
    destroyed once the activity stops."""
    started = time.monotonic()
    while time.monotonic() - started < ACTIVE_FOR:
        activity()
        assert state_of(client, sbx.id) == "running", "idle-destroyed despite the activity"
        time.sleep(ACTIVITY_EVERY)
    stopped = time.monotonic()
    wait_state(client, sbx.id, "destroyed", timeout=IDLE + 15)
    assert time.monotonic() - stopped >= IDLE - ACTIVITY_EVERY - 1


def test_exec_calls_reset_the_idle_clock(client, new):
    """"Activity that resets the idle clock: exec calls"."""
    s = new(idle_timeout_sec=IDLE)
    keeps_alive_while(client, s, lambda: s.exec.run("true"))


def test_file_writes_reset_the_idle_clock(client, new):
    """"Activity that resets the idle clock: ... file writes"."""
    s = new(idle_timeout_sec=IDLE)
    n = iter(range(1000))
    keeps_alive_while(client, s, lambda: s.files.write("/workspace/tick.txt", str(next(n))))


def test_preview_http_traffic_resets_the_idle_clock(client, new):
    """"Activity that resets the idle clock: ... preview HTTP traffic"."""
    s = new(idle_timeout_sec=60)
    serve_http(s, 8000, "hello")
    pv = s.previews.create(8000, visibility="public")
    assert preview_get(pv.url).text == "hello"
    # The idle clock starts short only now that the server answers.
    client.request("PATCH", "/sandboxes/%s" % s.id, json={"idle_timeout_sec": IDLE})

    def visit():
        assert preview_get(pv.url).status_code == 200

    keeps_alive_while(client, s, visit)


def test_terminal_stdin_resets_the_idle_clock(client, new):
    """"Activity that resets the idle clock: ... terminal stdin"."""
    s = new(idle_timeout_sec=IDLE)
    term = s.terminal.create()
    n = iter(range(1000))

    def type_into_it():
        i = next(n)
        term.send("echo tick%d\n" % i)
        term.read_until(b"tick%d" % i, timeout=10)

    keeps_alive_while(client, s, type_into_it)


def test_reads_are_not_activity_and_do_not_reset_the_idle_clock(client, new):
    """Only the listed activity resets the clock: reading a file or the
    sandbox's record is not on the list, so a dashboard polling an
    abandoned sandbox does not keep it alive."""
    s = new(idle_timeout_sec=IDLE)
    s.files.write("/workspace/r.txt", "r")
    started = time.monotonic()
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            try:
                s.files.read("/workspace/r.txt")
                client.sandboxes.get(s.id)
            except HearthError:
                return
            time.sleep(0.5)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    try:
        wait_state(client, s.id, "destroyed", timeout=IDLE + 15)
    finally:
        stop.set()
        t.join()
    assert time.monotonic() - started < IDLE + 10
