"""End-to-end tests against a running Hearth server.

    HEARTH_E2E=1 HEARTH_BASE_URL=http://127.0.0.1:7070 HEARTH_API_KEY=hk_... \\
        .venv/bin/pytest tests/e2e -q

They create `minimal` sandboxes (256 MiB, 512 MiB disk) and destroy them.
"""

import os
import pathlib
import re
import time
import uuid

import pytest

import hearth
from hearth import AsyncHearth, Hearth, NotFoundError, ValidationError

pytestmark = pytest.mark.skipif(os.environ.get("HEARTH_E2E") != "1", reason="set HEARTH_E2E=1 to run")

SHAPE = dict(template_id="minimal", memory_mb=256, disk_size_mb=512, timeout_sec=600)
README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
# The project's own README (the quick start's Python example).
TOP_README = pathlib.Path(__file__).resolve().parents[4] / "README.md"


@pytest.fixture(scope="module")
def client():
    c = Hearth(base_url=os.environ.get("HEARTH_BASE_URL"), api_key=os.environ.get("HEARTH_API_KEY"))
    yield c
    c.close()


@pytest.fixture(scope="module")
def sbx(client):
    with client.sandboxes.create(**SHAPE, tags=["sdk-python-e2e"]) as s:
        assert s.state == "running"
        yield s
    assert s.state == "destroyed"


def test_create_in_with_block_destroys(client):
    with client.sandboxes.create(**SHAPE) as s:
        sid = s.id
        assert sid.startswith("sbx_") and s.memory_mb == 256 and s.disk_size_mb == 512
        assert client.sandboxes.get(sid).state == "running"
    assert client.sandboxes.get(sid).state == "destroyed"


def test_context_manager_destroys_after_exception(client):
    box = {}
    with pytest.raises(RuntimeError):
        with client.sandboxes.create(**SHAPE) as s:
            box["id"] = s.id
            raise RuntimeError("boom")
    assert client.sandboxes.get(box["id"]).state == "destroyed"


def test_exec_echo(sbx):
    r = sbx.exec.run("echo hi")
    assert r.stdout == "hi\n"
    assert r.exit_code == 0
    assert isinstance(r.duration_ms, int)


def test_exec_exit_code_and_stderr(sbx):
    r = sbx.exec.run("sh -c 'echo oops >&2; exit 3'")
    assert r.exit_code == 3
    assert r.stderr == "oops\n"


def test_exec_cwd_env(sbx):
    r = sbx.exec.run("pwd; echo $FOO", cwd="/tmp", env={"FOO": "bar"})
    assert r.stdout == "/tmp\nbar\n"


def test_exec_stream_collects_output(sbx):
    out = []
    exit_code = None
    for ev in sbx.exec.stream("for i in 1 2 3; do echo line$i; done; exit 2"):
        if ev.event == "stdout":
            out.append(ev.text)
        elif ev.event == "exit":
            exit_code = ev.exit_code
    assert "".join(out) == "line1\nline2\nline3\n"
    assert exit_code == 2


def test_files_bytes_roundtrip(sbx):
    data = bytes(range(256))
    w = sbx.files.write("/tmp/e2e/bytes.bin", data)
    assert w.size_bytes == 256
    assert sbx.files.read("/tmp/e2e/bytes.bin") == data
    sbx.files.write("/tmp/e2e/text.txt", "héllo\n")
    assert sbx.files.read_text("/tmp/e2e/text.txt") == "héllo\n"


def test_files_2mib_roundtrip(sbx):
    data = os.urandom(2 * 1024 * 1024)
    w = sbx.files.write("/tmp/e2e/big.bin", data)
    assert w.size_bytes == len(data)
    assert sbx.files.read("/tmp/e2e/big.bin") == data
    assert sbx.files.stat("/tmp/e2e/big.bin").size == len(data)


def test_files_list_stat_mkdir_rename_remove(sbx):
    base = "/tmp/e2e-fs-%s" % uuid.uuid4().hex[:8]
    d = sbx.files.mkdir(base)
    assert d.is_dir and d.type == "dir"
    sbx.files.write(base + "/a.txt", "abc")
    names = {e.name: e for e in sbx.files.list(base)}
    assert "a.txt" in names and names["a.txt"].size == 3 and not names["a.txt"].is_dir
    st = sbx.files.stat(base + "/a.txt")
    assert st.type == "file" and st.size == 3
    r = sbx.files.rename(base + "/a.txt", base + "/b.txt")
    assert r.path == base + "/b.txt"
    assert {e.name for e in sbx.files.list(base)} == {"b.txt"}
    sbx.files.remove(base + "/b.txt")
    with pytest.raises(NotFoundError):
        sbx.files.stat(base + "/b.txt")
    sbx.files.write(base + "/sub/c.txt", "c")
    sbx.files.remove(base, recursive=True)
    assert not sbx.files.exists(base)


def test_background_process_and_logs(sbx):
    p = sbx.processes.start("echo started; sleep 60", name="bg")
    assert p.pid and p.state == "running"
    assert any(x.pid == p.pid for x in sbx.processes.list())
    deadline = time.time() + 15
    logs = sbx.processes.logs(p.pid)
    while "started" not in logs.stdout and time.time() < deadline:
        time.sleep(0.2)
        logs = sbx.processes.logs(p.pid)
    assert logs.stdout == "started\n"
    sbx.processes.kill(p.pid)
    deadline = time.time() + 15
    while sbx.processes.get(p.pid).state != "exited" and time.time() < deadline:
        time.sleep(0.2)
    assert sbx.processes.get(p.pid).state == "exited"


def test_snapshot_create_and_list(sbx):
    snap = sbx.snapshots.create(comment="e2e")
    assert snap.id.startswith("snap_") and snap.sandbox_id == sbx.id
    assert snap.status in ("creating", "ready")
    assert snap.id in [s.id for s in sbx.snapshots.list()]


def test_private_preview_share(sbx):
    pv = sbx.previews.create(8000, visibility="private")
    assert pv.id.startswith("prv_") and pv.port == 8000 and pv.visibility == "private"
    assert pv.id in [p.id for p in sbx.previews.list()]
    sh = sbx.previews.share(pv.id, ttl_seconds=600)
    assert sh.token and sh.id == pv.id
    assert sh.token in sh.share_url


def test_network_policy_round_trip(sbx):
    rules = [{"effect": "allow", "destination": "pypi.org", "ports": "443", "protocol": "tcp"}]
    p = sbx.network.set_policy("deny", rules)
    assert p.sandbox_id == sbx.id and p.default_effect == "deny" and p.rules == rules
    assert sbx.network.policy().rules == rules
    with pytest.raises(ValidationError) as e:
        sbx.network.set_policy("deny", [{"effect": "allow", "destination": "10.0.0.0/8"}])
    assert "rules[0].destination" in str(e.value.details)
    assert sbx.network.clear_policy().default_effect == "allow"
    assert sbx.network.policy().rules == []
    assert sbx.exec.run("echo still").stdout == "still\n"


def test_env_list(client):
    with client.sandboxes.create(**SHAPE, env={"E2E_VAR": "yes"}) as s:
        assert ("E2E_VAR", "yes") in [(v.key, v.value) for v in s.env.list()]
        assert s.exec.run("echo $E2E_VAR").stdout == "yes\n"


def test_missing_sandbox_is_not_found(client):
    with pytest.raises(NotFoundError) as ei:
        client.sandboxes.get("sbx_doesnotexist%s" % uuid.uuid4().hex[:6])
    assert ei.value.status == 404
    assert ei.value.request_id and ei.value.request_id in str(ei.value)


def test_validation_error_details(client):
    with pytest.raises(ValidationError) as ei:
        client.sandboxes.create(template_id="minimal", cpu_count=99)
    assert ei.value.status == 422
    assert "cpu_count" in [d["field"] for d in ei.value.details]


async def test_async_basics():
    async with AsyncHearth() as c:
        async with c.sandboxes.create(**SHAPE) as s:
            sid = s.id
            r = await s.exec.run("echo hi")
            assert (r.stdout, r.exit_code) == ("hi\n", 0)
            assert (await s.exec.run("exit 3")).exit_code == 3
            chunks = [ev.text async for ev in s.exec.stream("echo a; echo b") if ev.event == "stdout"]
            assert "".join(chunks) == "a\nb\n"
            await s.files.write("/tmp/async.bin", b"\x00\x01")
            assert await s.files.read("/tmp/async.bin") == b"\x00\x01"
            with pytest.raises(NotFoundError):
                await c.sandboxes.get("sbx_doesnotexist")
        assert (await c.sandboxes.get(sid)).state == "destroyed"


def _run_readme_example(readme):
    text = readme.read_text()
    m = re.search(r"<!-- example -->\s*```python\n(.*?)```\s*<!-- /example -->", text, re.S)
    assert m, "README example block not found in %s" % readme
    code = m.group(1)
    exec(compile(code, str(readme), "exec"), {"__name__": "__readme__"})


def test_readme_example_runs():
    _run_readme_example(README)


def test_the_project_readme_example_runs_verbatim(capsys):
    _run_readme_example(TOP_README)
    out = capsys.readouterr().out
    # What the example prints: Python's version from inside the sandbox,
    # then the streamed lines in order.
    assert re.search(r"^python 3\.\d+\.\d+ exit 0 in \d+ ms$", out, re.M), out
    assert "live: step 1\nlive: step 2\nlive: step 3\n" in out, out
