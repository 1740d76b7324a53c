"""The official E2B Python SDK (pinned in requirements.txt) against a real
Hearth with real VMs, configured only by E2B's environment variables
(E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY): scripts/test-e2b starts the
server and sets them. Each test asserts what the SDK's user sees."""

import os
import time
import uuid

import httpx
import pytest
from e2b import Sandbox
from e2b.exceptions import NotFoundException, TimeoutException
from e2b.sandbox.commands.command_handle import CommandExitException

PREVIEW = os.environ["HEARTH_PREVIEW_URL"]  # the proxy, E2B_SANDBOX_URL


@pytest.fixture(scope="module")
def sbx():
    s = Sandbox.create(
        template="base",
        timeout=600,
        envs={"GREETING": "hello"},
        metadata={"suite": "e2b", "run": RUN},
    )
    yield s
    try:
        s.kill()
    except Exception:
        pass


RUN = uuid.uuid4().hex[:8]


def test_create_lists_and_describes_the_sandbox(sbx):
    info = sbx.get_info()
    assert info.sandbox_id == sbx.sandbox_id and sbx.sandbox_id.startswith("sbx-")
    assert info.metadata == {"suite": "e2b", "run": RUN}
    assert info.state.value == "running" if hasattr(info.state, "value") else info.state == "running"
    found = Sandbox.list(query=None).next_items()
    assert sbx.sandbox_id in [x.sandbox_id for x in found]
    from e2b import SandboxQuery
    mine = Sandbox.list(query=SandboxQuery(metadata={"run": RUN})).next_items()
    assert [x.sandbox_id for x in mine] == [sbx.sandbox_id]
    none = Sandbox.list(query=SandboxQuery(metadata={"run": "other"})).next_items()
    assert none == []


def test_commands_run_with_output_exit_codes_env_and_cwd(sbx):
    r = sbx.commands.run("echo out-$GREETING; echo err >&2")
    assert (r.stdout, r.stderr, r.exit_code) == ("out-hello\n", "err\n", 0)
    r = sbx.commands.run("echo $A-$B; pwd", envs={"A": "1", "B": "two"}, cwd="/tmp")
    assert r.stdout == "1-two\n/tmp\n"
    with pytest.raises(CommandExitException) as e:
        sbx.commands.run("echo bad >&2; exit 3")
    assert e.value.exit_code == 3 and e.value.stderr == "bad\n"
    with pytest.raises(TimeoutException):
        sbx.commands.run("sleep 30", timeout=1)


def test_background_commands_connect_list_stdin_and_kill(sbx):
    h = sbx.commands.run("sleep 300", background=True)
    assert h.pid in [p.pid for p in sbx.commands.list()]
    assert sbx.commands.kill(h.pid)
    with pytest.raises(CommandExitException):
        h.wait()
    cat = sbx.commands.run("cat", background=True, stdin=True)
    sbx.commands.send_stdin(cat.pid, "typed in\n")
    sbx.commands.close_stdin(cat.pid)
    assert cat.wait().stdout == "typed in\n"
    ticker = sbx.commands.run("for i in 1 2 3; do echo tick$i; sleep 1; done", background=True)
    again = sbx.commands.connect(ticker.pid)
    assert "tick3" in again.wait().stdout


def test_files_write_read_list_exists_make_dir_rename_remove(sbx):
    d = "/tmp/files-%s" % RUN
    sbx.files.write(d + "/a.txt", "text content")
    sbx.files.write(d + "/b.bin", b"\x00\x01\xff")
    sbx.files.write_files([
        {"path": d + "/many/one.txt", "data": "1"},
        {"path": d + "/many/two.txt", "data": "2"},
    ])
    assert sbx.files.read(d + "/a.txt") == "text content"
    assert bytes(sbx.files.read(d + "/b.bin", format="bytes")) == b"\x00\x01\xff"
    assert sorted(e.name for e in sbx.files.list(d)) == ["a.txt", "b.bin", "many"]
    deep = sorted(e.path for e in sbx.files.list(d, depth=2))
    assert d + "/many/two.txt" in deep
    assert sbx.files.exists(d + "/a.txt") and not sbx.files.exists(d + "/nope")
    assert sbx.files.make_dir(d + "/new")
    sbx.files.rename(d + "/a.txt", d + "/new/a2.txt")
    assert sbx.files.read(d + "/new/a2.txt") == "text content"
    sbx.files.remove(d + "/many")
    assert not sbx.files.exists(d + "/many/one.txt")
    with pytest.raises(NotFoundException):
        sbx.files.read(d + "/gone.txt")


def test_watch_dir_sees_a_new_file(sbx):
    d = "/tmp/watch-%s" % RUN
    sbx.files.make_dir(d)
    w = sbx.files.watch_dir(d)
    sbx.files.write(d + "/seen.txt", "x")
    names = []
    for _ in range(50):
        names += [e.name for e in w.get_new_events()]
        if "seen.txt" in names:
            break
        time.sleep(0.1)
    w.stop()
    assert "seen.txt" in names


def test_get_host_reaches_a_server_in_the_sandbox(sbx):
    sbx.files.write("/tmp/www/index.html", "served from the sandbox")
    sbx.commands.run("cd /tmp/www && python3 -m http.server 8080", background=True)
    host = sbx.get_host(8080)
    assert host.startswith("8080-" + sbx.sandbox_id + ".")
    port = httpx.URL(PREVIEW).port
    for _ in range(100):
        try:
            r = httpx.get("http://127.0.0.1:%d/" % port, headers={"Host": host}, timeout=5)
            if r.status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    assert r.text == "served from the sandbox"


def test_set_timeout_connect_from_a_second_client_and_kill():
    s = Sandbox.create(template="base", timeout=120)
    s.set_timeout(300)
    end = s.get_info().end_at
    other = Sandbox.connect(s.sandbox_id)
    assert other.commands.run("echo from-second").stdout == "from-second\n"
    assert other.get_info().end_at >= end
    s.kill()
    with pytest.raises(NotFoundException):
        Sandbox.get_info(s.sandbox_id)


def test_pause_and_resume_keep_a_file_and_a_process():
    s = Sandbox.create(template="base", timeout=300)
    s.files.write("/tmp/kept.txt", "kept")
    h = s.commands.run("sleep 600", background=True)
    assert s.pause()
    assert s.get_info().state.value == "paused" if hasattr(s.get_info().state, "value") else s.get_info().state == "paused"
    back = Sandbox.connect(s.sandbox_id)
    assert back.files.read("/tmp/kept.txt") == "kept"
    assert h.pid in [p.pid for p in back.commands.list()]
    back.kill()


def follow(handle):
    """Runs handle.wait() in a thread: the PTY output it collects, and how
    it ended (its result or its exception)."""
    import threading
    seen, ended = bytearray(), {}

    def run():
        try:
            ended["result"] = handle.wait(on_pty=seen.extend)
        except Exception as e:  # what the SDK raises is what is checked
            ended["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return seen, ended, t


def wait_for(text, seen):
    for _ in range(300):
        if text in seen:
            return
        time.sleep(0.1)
    raise AssertionError("no %r in %r" % (text, bytes(seen)))


def test_pty_session_takes_input_resizes_and_is_killed(sbx):
    from e2b.sandbox.commands.command_handle import PtySize
    h = sbx.pty.create(PtySize(rows=24, cols=80), cwd="/tmp", envs={"MARK": "pty"})
    seen, ended, t = follow(h)
    sbx.pty.send_stdin(h.pid, b"tty; stty size; echo $MARK-$((6*7)) $PWD\n")
    wait_for(b"pty-42 /tmp", seen)
    assert b"/dev/pts/" in seen and b"24 80" in seen
    sbx.pty.resize(h.pid, PtySize(rows=50, cols=132))
    sbx.pty.send_stdin(h.pid, b"stty size\n")
    wait_for(b"50 132", seen)
    assert h.pid in [p.pid for p in sbx.commands.list()]
    assert sbx.pty.kill(h.pid)
    t.join(30)
    assert isinstance(ended.get("error"), CommandExitException), ended
    assert h.pid not in [p.pid for p in sbx.commands.list()]


def test_a_pty_runs_on_after_its_client_leaves_takes_input_and_a_new_client(sbx):
    from e2b.sandbox.commands.command_handle import PtySize
    started, done = "/tmp/pty-started-" + RUN, "/tmp/pty-done-" + RUN
    h = sbx.pty.create(PtySize(rows=24, cols=80))
    # Far more output than any buffer holds, then a mark; nobody reads it.
    # The client leaves once the shell has the command (input still in
    # flight when a client drops its stream is not promised to arrive).
    sbx.pty.send_stdin(h.pid, ("touch %s; seq 1 200000; touch %s\n" % (started, done)).encode())
    for _ in range(300):
        if sbx.files.exists(started):
            break
        time.sleep(0.1)
    assert sbx.files.exists(started), "the shell never got the command"
    h.disconnect()
    for _ in range(600):
        if sbx.files.exists(done):
            break
        time.sleep(0.1)
    assert sbx.files.exists(done), "the shell blocked on output nobody read"
    assert h.pid in [p.pid for p in sbx.commands.list()]
    # Input still reaches it with no client attached, as on E2B.
    typed = "/tmp/pty-typed-" + RUN
    sbx.pty.send_stdin(h.pid, ("echo typed > %s\n" % typed).encode())
    for _ in range(100):
        if sbx.files.exists(typed):
            break
        time.sleep(0.1)
    assert sbx.files.read(typed) == "typed\n"
    again = sbx.pty.connect(h.pid)
    seen, ended, t = follow(again)
    sbx.pty.send_stdin(h.pid, b"echo reattached-$((40+2))\n")
    wait_for(b"reattached-42", seen)
    sbx.pty.resize(h.pid, PtySize(rows=30, cols=90))
    assert sbx.pty.kill(h.pid)
    t.join(30)
    assert h.pid not in [p.pid for p in sbx.commands.list()]


def test_pty_shell_exit_code_reaches_the_client(sbx):
    from e2b.sandbox.commands.command_handle import PtySize
    h = sbx.pty.create(PtySize(rows=24, cols=80))
    seen, ended, t = follow(h)
    sbx.pty.send_stdin(h.pid, b"exit 5\n")
    t.join(30)
    assert getattr(ended.get("error"), "exit_code", None) == 5, ended
    with pytest.raises(Exception):
        sbx.pty.resize(h.pid, PtySize(rows=10, cols=10))


def test_unsupported_calls_say_so(sbx):
    with pytest.raises(Exception) as e:
        sbx.create_snapshot(mode="filesystem")
    assert "not supported" in str(e.value)
    with pytest.raises(Exception) as e:
        Sandbox.create(template="base", mcp={"exa": {"apiKey": "x"}})
    assert "not supported" in str(e.value)


def test_a_snapshot_starts_sandboxes_after_its_source_is_killed():
    s = Sandbox.create(template="base", timeout=300)
    s.files.write("/tmp/snap.txt", "in the snapshot")
    snap = s.create_snapshot(name="e2b-snap-" + RUN)
    listed = Sandbox.list_snapshots(sandbox_id=s.sandbox_id).next_items()
    assert [x.snapshot_id for x in listed] == [snap.snapshot_id]
    assert s.is_running()
    s.kill()
    t = Sandbox.create(template=snap.snapshot_id, timeout=120)
    assert t.files.read("/tmp/snap.txt") == "in the snapshot"
    t.kill()
    assert Sandbox.delete_snapshot(snap.snapshot_id)
    assert not Sandbox.delete_snapshot(snap.snapshot_id)


def test_fork_copies_files_and_running_processes():
    s = Sandbox.create(template="base", timeout=300)
    s.files.write("/tmp/forked.txt", "before the fork")
    h = s.commands.run("sleep 600", background=True)
    forks = s.fork(count=2, timeout=120)
    assert len(forks) == 2 and not any(isinstance(f, Exception) for f in forks), forks
    for f in forks:
        assert f.sandbox_id != s.sandbox_id
        assert f.files.read("/tmp/forked.txt") == "before the fork"
        assert h.pid in [p.pid for p in f.commands.list()]
        f.files.write("/tmp/forked.txt", "changed in " + f.sandbox_id)
        f.kill()
    assert s.files.read("/tmp/forked.txt") == "before the fork"
    s.kill()


def test_update_network_replaces_the_egress_policy(sbx):
    api = os.environ["E2B_API_URL"].rsplit("/e2b", 1)[0]
    admin = {"Authorization": "Bearer " + os.environ["E2B_API_KEY"]}
    policy = api + "/api/v1/sandboxes/%s/network-policy" % sbx.sandbox_id.replace("-", "_")
    sbx.update_network({"allow_out": ["203.0.113.7"], "deny_out": ["0.0.0.0/0"]})
    rules = httpx.get(policy, headers=admin).json()["data"]["rules"]
    assert [(r["effect"], r["destination"]) for r in rules] == [
        ("allow", "203.0.113.7"), ("deny", "0.0.0.0/0")]
    sbx.update_network({})
    cleared = httpx.get(policy, headers=admin).json()["data"]
    assert (cleared["default_effect"], cleared["rules"]) == ("allow", [])


def test_the_async_sdk_through_the_e2b_listener():
    """E2B_API_URL at the root of Hearth's own E2B listener
    (HEARTH_E2B_LISTEN), with the async SDK."""
    import asyncio
    from e2b import AsyncSandbox

    async def run():
        url = os.environ["HEARTH_E2B_STANDALONE"]
        s = await AsyncSandbox.create(template="base", timeout=120, api_url=url,
                                      metadata={"async": RUN})
        try:
            r = await s.commands.run("echo async-$((2+3))")
            assert (r.stdout, r.exit_code) == ("async-5\n", 0)
            await s.files.write("/tmp/async.txt", "written async")
            assert await s.files.read("/tmp/async.txt") == "written async"
            found = await AsyncSandbox.list(api_url=url).next_items()
            assert s.sandbox_id in [x.sandbox_id for x in found]
        finally:
            await s.kill()
        assert not await s.is_running()

    asyncio.run(run())


def test_envd_refuses_a_missing_or_wrong_access_token(sbx):
    for token in (None, "ea_wrong"):
        headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "Content-Type": "application/json"}
        if token:
            headers["X-Access-Token"] = token
        r = httpx.post(PREVIEW + "/process.Process/List", headers=headers, content=b"{}")
        assert r.status_code == 401, r.text


def test_another_tenant_cannot_reach_the_sandbox(sbx):
    api = os.environ["E2B_API_URL"].rsplit("/e2b", 1)[0]
    admin = {"Authorization": "Bearer " + os.environ["E2B_API_KEY"]}
    r = httpx.post(api + "/api/v1/api-keys", headers=admin,
                   json={"name": "stranger", "tenant_id": "ten_e2b_stranger"})
    assert r.status_code == 201, r.text
    stranger = r.json()["data"]["key"]
    with pytest.raises(NotFoundException):
        Sandbox.get_info(sbx.sandbox_id, api_key=stranger)
    assert Sandbox.kill(sbx.sandbox_id, api_key=stranger) is False
    assert sbx.is_running()
