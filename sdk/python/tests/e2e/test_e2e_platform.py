"""End-to-end tests of terminals, file watch and tree, templates, API keys
and usage against a running Hearth server (see test_e2e.py for how to run).

They create `minimal` sandboxes (256 MiB, 512 MiB disk) and templates built
on `minimal`, and destroy the sandboxes.
"""

import asyncio
import os
import queue
import re
import threading
import time
import uuid

import pytest

from hearth import (
    AsyncHearth,
    AuthenticationError,
    BuildSpec,
    Hearth,
    HearthError,
    NotFoundError,
    TemplateBuildError,
    ValidationError,
)

pytestmark = pytest.mark.skipif(os.environ.get("HEARTH_E2E") != "1", reason="set HEARTH_E2E=1 to run")

SHAPE = dict(template_id="minimal", memory_mb=256, disk_size_mb=512, timeout_sec=600)
TEMPLATE_SHAPE = dict(memory_mb=256, disk_size_mb=512)
# The output line of `echo hi` (the echoed command line has "echo " before it).
HI = re.compile(rb"(^|\n)hi\r?\n")


def stty(rows, cols):
    return re.compile(rb"(^|\n)%d %d\r?\n" % (rows, cols))


def uid():
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def client():
    c = Hearth(base_url=os.environ.get("HEARTH_BASE_URL"), api_key=os.environ.get("HEARTH_API_KEY"))
    yield c
    c.close()


@pytest.fixture(scope="module")
def sbx(client):
    with client.sandboxes.create(**SHAPE, tags=["sdk-python-e2e-platform"]) as s:
        yield s


def first_event(watch, pred, timeout=60.0):
    """The first event of ``watch`` matching ``pred``, read on a helper
    thread so a missing event fails the test instead of hanging it."""
    out = queue.Queue()

    def run():
        try:
            for ev in watch:
                if pred(ev):
                    out.put(ev)
                    return
            out.put(AssertionError("watch ended without a matching event"))
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            out.put(e)

    threading.Thread(target=run, daemon=True).start()
    try:
        got = out.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError("no matching watch event within %ss" % timeout)
    if isinstance(got, BaseException):
        raise got
    return got


# ---------------------------------------------------------------- terminals

def test_terminal_echo_resize_and_reattach(sbx):
    with sbx.terminal.create(80, 24) as t:
        assert t.id and t.connected
        t.send("echo hi\n")
        t.read_until(HI, timeout=60)
        t.resize(100, 40)
        t.send("stty size\n")
        t.read_until(stty(40, 100), timeout=60)
        # Detaching leaves the shell running; attaching again reaches it.
        t.send("MARK=kept-$((40+2)); echo marked\n")
        t.read_until(re.compile(rb"(^|\n)marked\r?\n"), timeout=60)
        t.detach()
        with sbx.terminal.connect(t.id) as t2:
            t2.send("echo $MARK\n")
            t2.read_until(re.compile(rb"(^|\n)kept-42\r?\n"), timeout=60)
        tid = t.id
    # `with` closed it: the terminal is gone.
    with pytest.raises(NotFoundError):
        sbx.terminal.connect(tid)


def test_terminal_shell_exit_ends_output(sbx):
    t = sbx.terminal.create(80, 24, env={"E2E_TERM": "yes"})
    try:
        t.send("echo $E2E_TERM; exit 4\n")
        out = b"".join(t)  # iteration ends when the shell exits
        assert re.search(rb"(^|\n)yes\r?\n", out), out
        assert not t.connected
        assert t.exit_code == 4
    finally:
        t.close()


# ---------------------------------------------------------------- files

def test_files_watch_sees_writes_and_removal(sbx):
    base = "/tmp/e2e-watch-%s" % uid()
    sbx.files.mkdir(base)
    target = base + "/sub/new.txt"
    with sbx.files.watch(base, recursive=True) as w:
        sbx.files.mkdir(base + "/sub")
        time.sleep(0.5)  # the recursive watch picks up the new directory
        sbx.files.write(target, "one")
        ev = first_event(w, lambda e: e.path == target)
        assert ev.event in ("created", "modified") and not ev.is_dir
        sbx.files.remove(target)
        ev = first_event(w, lambda e: e.path == target and e.event == "deleted")
        assert ev.id is not None


def test_files_tree(sbx):
    base = "/tmp/e2e-tree-%s" % uid()
    sbx.files.write(base + "/a/b.txt", "bee")
    sbx.files.write(base + "/top.txt", "t")
    tree = sbx.files.tree(base, depth=3)
    assert tree.is_dir and tree.path == base
    nodes = {n.path: n for n in tree.walk()}
    assert nodes[base + "/a"].is_dir
    assert nodes[base + "/a/b.txt"].size == 3 and nodes[base + "/a/b.txt"].type == "file"
    assert nodes[base + "/top.txt"].size == 1
    shallow = sbx.files.tree(base, depth=1)
    a = [c for c in shallow.children if c.name == "a"][0]
    assert a.children == [] and a.truncated


# ---------------------------------------------------------------- templates

def test_template_build_and_sandbox_from_it(client):
    name = "e2e-tpl-%s" % uid()
    spec = BuildSpec(from_="minimal", **TEMPLATE_SHAPE).run("echo built-by-e2e > /workspace/built.txt")
    v = client.templates.validate(spec, name=name)
    assert v.valid and v.errors == [] and v.build_spec["from"] == "minimal"
    t = client.templates.create(name, spec)
    assert t.id.startswith("tpl_") and t.name == name and t.build.state in ("queued", "building")
    # The log streams until the build ends, then the final state.
    events = list(client.templates.builds.logs(t.build.id))
    assert events[-1].event == "done" and events[-1].get("state") == "ready"
    assert any(e.event == "log" and e.text for e in events[:-1])
    build = client.templates.wait(t, timeout=600)
    assert build.state == "ready" and build.template_id == t.id and build.version == 1
    got = client.templates.get(name)
    assert got.id == t.id and got.version == "v1" and got.memory_mb == 256
    assert t.id in [x.id for x in client.templates.list()]
    with client.sandboxes.create(template_id=t.id, timeout_sec=600) as s:
        assert s.template_id == t.id
        assert s.files.read_text("/workspace/built.txt") == "built-by-e2e\n"


def test_template_failure_raises_with_log_then_rebuild(client):
    name = "e2e-fail-%s" % uid()
    bad = BuildSpec(from_="minimal", **TEMPLATE_SHAPE).run("echo about-to-fail-%s; exit 3" % name)
    t = client.templates.create(name, bad)
    with pytest.raises(TemplateBuildError) as ei:
        client.templates.wait(t.build.id, timeout=600)
    e = ei.value
    assert e.build.state == "failed" and e.build.error
    assert any("about-to-fail-%s" % name in line for line in e.logs), e.logs
    assert "about-to-fail" in str(e)
    fixed = client.templates.rebuild(t.id, BuildSpec(from_="minimal", **TEMPLATE_SHAPE).run("true"))
    assert fixed.version == 2 and fixed.template_id == t.id
    assert client.templates.wait(fixed, timeout=600).state == "ready"
    assert client.templates.get(t.id).version == "v2"


def test_template_invalid_spec(client):
    bad = {"from": "minimal", "memory_mb": 1, "steps": [{"shell": "x"}]}
    v = client.templates.validate(bad)
    assert not v.valid
    assert {"build_spec.memory_mb", "build_spec.steps[0]"} <= {x["field"] for x in v.errors}
    with pytest.raises(ValidationError) as ei:
        client.templates.create("e2e-bad-%s" % uid(), bad)
    assert "build_spec.memory_mb" in [d["field"] for d in ei.value.details]
    with pytest.raises(NotFoundError):
        client.templates.get("e2e-no-such-template-%s" % uid())


# ---------------------------------------------------------------- API keys, usage

def test_api_keys_lifecycle(client):
    k = client.api_keys.create("e2e-%s" % uid())
    assert k.id and k.key and k.key.startswith(k.prefix)
    listed = {x.id: x for x in client.api_keys.list()}
    assert k.id in listed and listed[k.id].key is None and listed[k.id].name == k.name
    with Hearth(api_key=k.key, base_url=client.base_url) as other:
        assert isinstance(other.usage.get().groups, list)  # the new key works
        client.api_keys.revoke(k.id)
        with pytest.raises(AuthenticationError):
            other.usage.get()
    assert k.id not in [x.id for x in client.api_keys.list()]


def test_usage(client, sbx):
    sbx.exec.run("true")
    u = sbx.usage()
    assert u.sandbox_id == sbx.id and u.state == "running"
    assert u.runtime_sec > 0 and u.provisioned_vcpu_ms > 0 and u.provisioned_memory_mb_ms > 0
    rep = client.usage.get(group_by="sandbox_id")
    assert rep.group_by == "sandbox_id"
    mine = [g for g in rep.groups if g.key == sbx.id]
    assert len(mine) == 1 and mine[0].runtime_sec > 0
    total = client.usage.get()
    assert len(total.groups) == 1 and total.groups[0].runtime_sec >= mine[0].runtime_sec


# ---------------------------------------------------------------- vault, tokens, audit

def test_secret_bound_rotated_unbound_and_masked(client, sbx):
    name = "e2e-%s" % uid()
    value, rotated = "sk-e2e-%s-first" % uid(), "sk-e2e-%s-second" % uid()
    s = client.secrets.create(name, value, expose_as_env="E2E_SECRET", sandbox_id=sbx.id)
    assert s.value_prefix and value not in repr(s)
    rev = "printf %s \"$E2E_SECRET\" | rev"
    assert sbx.exec.run(rev).stdout == value[::-1]
    assert sbx.exec.run("echo $E2E_SECRET").stdout == "***\n"  # masked in output
    assert all(e.key != "E2E_SECRET" for e in sbx.env.list())  # not in env.list
    client.secrets.rotate(s.id, rotated)
    assert sbx.exec.run(rev).stdout == rotated[::-1]
    (binding,) = client.secrets.bindings(sandbox_id=sbx.id, secret_id=s.id)
    client.secrets.unbind(binding.id)
    assert sbx.exec.run("printf %s \"${E2E_SECRET-unset}\"").stdout == "unset"
    # Named per call: only that call gets it.
    assert sbx.exec.run(rev, secrets=[name]).stdout == rotated[::-1]
    client.secrets.delete(s.id)
    assert s.id not in [x.id for x in client.secrets.list()]


def test_scoped_token_can_exec_on_its_sandbox_only(client, sbx):
    t = client.tokens.create("u-%s" % uid(), "w", scopes=["sandboxes:exec"], sandbox_ids=[sbx.id],
                             expires_in_seconds=600)
    assert t.token and t.token.startswith("hk_st_") and t.scopes == ["sandboxes:exec"]
    with Hearth(api_key=t.token, base_url=client.base_url) as scoped:
        r = scoped.request("POST", "/sandboxes/%s/exec" % sbx.id, json={"command": "echo ok"})
        assert r.json()["data"]["stdout"] == "ok\n"
        with pytest.raises(HearthError) as e:
            scoped.sandboxes.create(**SHAPE)
        assert e.value.status == 403 and "sandboxes:create" in str(e.value)
        client.tokens.revoke(t.id)
        with pytest.raises(AuthenticationError):
            scoped.request("POST", "/sandboxes/%s/exec" % sbx.id, json={"command": "true"})


def test_audit_log_lists_what_was_done(client, sbx):
    sbx.exec.run("echo audited-%s" % uid())
    entries = list(client.audit.iter(sandbox_id=sbx.id, type="sandbox.exec"))
    assert entries and entries[-1].type == "sandbox.exec"
    assert entries[-1].details["command"].startswith("echo audited-")
    assert entries[-1].outcome == "ok" and entries[-1].actor_type == "api_key"


def test_deploy_serves_the_app_at_its_url(client, sbx):
    import httpx

    page = "deployed-%s" % uid()
    sbx.exec.run("mkdir -p /workspace/www && echo %s > /workspace/www/index.html" % page)
    r = sbx.deploy(8080, "busybox httpd -f -p 8080 -h /workspace/www", name="e2e-%s" % uid())
    try:
        assert r.promoted and r.version.state == "active", r
        url = httpx.URL(r.deployment.public_url)
        got = httpx.get("http://127.0.0.1:%d/" % url.port, headers={"Host": url.netloc.decode()})
        assert got.status_code == 200 and got.text.strip() == page
        assert [d.id for d in client.deployments.list() if d.id == r.deployment.id]
        assert client.deployments.versions(r.deployment.id)[0].id == r.version.id
    finally:
        client.deployments.delete(r.deployment.id)


def test_deploy_builds_runs_replicas_takes_env_scales_and_adds_a_domain(client, sbx):
    import httpx

    www = "/workspace/www-%s" % uid()
    project = "e2e-%s" % uid()
    assert sbx.exec.run("mkdir -p %s" % www).exit_code == 0
    start = "echo \"$(cat built.txt) [$GREETING]\" > index.html; exec busybox httpd -f -p 8080 -h ."
    r = sbx.deploy(8080, start, name="e2e-replicas-%s" % uid(), replicas=2, output_path=www,
                   build_command="echo compiled > built.txt && echo build-ok",
                   external_project_id=project)
    dep = r.deployment
    try:
        assert r.promoted and r.version.state == "active", r
        assert "build-ok" in r.version.build_log, r.version
        assert r.version.output_path == www and r.version.build_command.startswith("echo compiled")
        assert dep.replicas == 2 and len(dep.instance_ids) == 2, dep
        assert dep.external_project_id == project and r.custom_domain is None
        assert not sbx.files.exists(www + "/built.txt"), "the build ran in a clone, not the source"
        url = httpx.URL(dep.public_url)

        def page():
            got = httpx.get("http://127.0.0.1:%d/" % url.port, headers={"Host": url.netloc.decode()})
            assert got.status_code == 200, got.text
            return got.text.strip()

        assert page() == "compiled []"
        assert [d.id for d in client.deployments.list(external_project_id=project)] == [dep.id]

        assert client.deployments.set_env(dep.id, {"GREETING": "hello"}) == {"GREETING": "hello"}
        assert client.deployments.get_env(dep.id) == {"GREETING": "hello"}
        assert client.deployments.redeploy(dep.id).promoted
        assert page() == "compiled [hello]"

        d = client.deployments.scale(dep.id, 1)
        assert d.replicas == 1 and len(d.instance_ids) == 1, d
        assert page() == "compiled [hello]"
        logs = client.deployments.instance_logs(dep.id, d.instance_ids[0], lines=5)
        assert set(logs) == {"stdout", "stderr"}

        name = "e2e-%s.example.com" % uid()
        dom = client.deployments.domains.add(dep.id, name)
        assert dom.domain == name and dom.state == "pending" and not dom.has_certificate, dom
        assert dom.verification["type"] == "TXT" and dom.verification["value"]
        assert dom.verification["name"].startswith("_hearth-challenge."), dom.verification
        assert [x.id for x in client.deployments.domains.list(dep.id)] == [dom.id]
    finally:
        client.deployments.delete(dep.id)
    with pytest.raises(NotFoundError):
        client.deployments.get(dep.id)


# ---------------------------------------------------------------- async

async def test_async_terminal_watch_keys_usage():
    async with AsyncHearth() as c:
        async with c.sandboxes.create(**SHAPE) as s:
            async with s.terminal.create(80, 24) as t:
                await t.send("echo hi\n")
                await t.read_until(HI, timeout=60)
                await t.resize(120, 30)
                await t.send(b"stty size\n")
                await t.read_until(stty(30, 120), timeout=60)
            base = "/tmp/e2e-awatch-%s" % uid()
            await s.files.mkdir(base)
            async with s.files.watch(base) as w:
                await s.files.write(base + "/a.txt", "x")

                async def first():
                    async for ev in w:
                        if ev.path == base + "/a.txt":
                            return ev

                ev = await asyncio.wait_for(first(), 60)
                assert ev.event == "created"
            tree = await s.files.tree(base)
            assert [n.name for n in tree.children] == ["a.txt"]
            k = await c.api_keys.create("e2e-async-%s" % uid())
            assert k.id in [x.id for x in await c.api_keys.list()]
            await c.api_keys.revoke(k.id)
            u = await s.usage()
            assert u.sandbox_id == s.id and u.runtime_sec > 0
            rep = await c.usage.get(group_by="sandbox_id")
            assert s.id in [g.key for g in rep.groups]
