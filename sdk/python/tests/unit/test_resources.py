"""Templates and builds, API keys, usage, file tree and watch."""

import base64
import datetime as dt
import json

import httpx
import pytest

import hearth
from hearth import (
    AuthenticationError,
    BuildSpec,
    ConflictError,
    HearthTimeoutError,
    NotFoundError,
    TemplateBuildError,
    ValidationError,
)

from conftest import SBX, err, ok


def frame(id_, type_, **data):
    head = "event: %s\n" % type_ + ("id: %s\n" % id_ if id_ is not None else "")
    return (head + "data: %s\n\n" % json.dumps(dict(data, type=type_))).encode()


def sse_body(*frames):
    return lambda req: httpx.Response(200, headers={"content-type": "text/event-stream"},
                                      content=b"".join(frames))


BUILD = {
    "id": "bld_1", "template_id": "tpl_1", "version": 1, "state": "queued", "status": "queued",
    "error": None, "build_spec": {"from": "minimal"}, "created_at": "2026-01-01T00:00:00.000Z",
    "started_at": None, "finished_at": None, "duration_ms": None,
    "logs_url": "/api/v1/sandbox-template-builds/bld_1/logs/stream",
}
TPL = {
    "id": "tpl_1", "name": "web", "built_in": False, "version": None, "state": "queued",
    "latest_build_id": "bld_1", "cpu_count": 1, "memory_mb": 256, "disk_size_mb": 512,
    "build_spec": {"from": "minimal"}, "versions": [{"version": 1, "build_id": "bld_1", "state": "queued"}],
    "created_at": "2026-01-01T00:00:00.000Z",
}


# ---------------------------------------------------------------- build specs

def test_build_spec_wire_form():
    spec = (BuildSpec(from_="minimal", memory_mb=256, env={"A": "1"})
            .run("echo hi > /workspace/x")
            .copy("/workspace/y.bin", b"\x00\xff", mode=0o600))
    d = spec.to_dict()
    assert d == {
        "from": "minimal",
        "steps": [{"run": "echo hi > /workspace/x"},
                  {"copy": {"path": "/workspace/y.bin",
                            "content_base64": base64.b64encode(b"\x00\xff").decode(), "mode": 0o600}}],
        "env": {"A": "1"},
        "memory_mb": 256,
    }
    assert BuildSpec().to_dict() == {}  # nothing unset is sent (the server refuses unknown fields)


# ---------------------------------------------------------------- templates

def test_template_create_sends_name_spec_and_idempotency_key(make_client):
    c, rec = make_client(ok(dict(TPL, build=BUILD), 202))
    t = c.templates.create("web", BuildSpec(from_="minimal", memory_mb=256).run("true"))
    req = rec.requests[0]
    assert req.method == "POST" and req.url.path == "/api/v1/sandbox-templates"
    assert rec.json() == {"name": "web", "build_spec": {"from": "minimal", "steps": [{"run": "true"}],
                                                        "memory_mb": 256}}
    assert len(req.headers["idempotency-key"]) == 36
    assert isinstance(t, hearth.Template) and t.id == "tpl_1" and t.name == "web" and not t.built_in
    assert isinstance(t.build, hearth.TemplateBuild) and t.build.id == "bld_1" and t.build.state == "queued"
    assert not t.build.done and t.raw["build"]["id"] == "bld_1"


def test_template_create_retried_with_same_key_and_dict_spec(make_client):
    c, rec = make_client(err(503, "unavailable"), ok(dict(TPL, build=BUILD), 202))
    c.templates.create("web", {"from": "minimal"}, idempotency_key="k1")
    assert [r.headers["idempotency-key"] for r in rec.requests] == ["k1", "k1"]
    assert rec.json(0) == rec.json(1) == {"name": "web", "build_spec": {"from": "minimal"}}


def test_template_create_conflict(make_client):
    c, rec = make_client(err(409, "conflict", 'a template named "web" already exists'))
    with pytest.raises(ConflictError, match="already exists"):
        c.templates.create("web", {"from": "minimal"})


def test_template_validate(make_client):
    errors = [{"field": "build_spec.memory_mb", "message": "must be between 128 and 8192"}]
    c, rec = make_client(ok({"valid": False, "errors": errors, "build_spec": None}))
    v = c.templates.validate(BuildSpec(from_="minimal", memory_mb=1), name="web")
    assert rec.requests[0].url.path == "/api/v1/sandbox-templates/validate"
    assert rec.json() == {"name": "web", "build_spec": {"from": "minimal", "memory_mb": 1}}
    assert v.valid is False and v.errors == errors and v.build_spec is None


def test_template_list_and_get(make_client):
    builtin = {"id": "minimal", "name": "minimal", "description": "busybox", "aliases": [],
               "built_in": True, "warm_shapes": ["c1-m256-d512"]}
    c, rec = make_client(
        httpx.Response(200, json={"default_template_id": "default", "data": [builtin, TPL]}),
        ok(dict(TPL, state="ready", version="v1")),
    )
    ts = c.templates.list()
    assert [(t.id, t.built_in) for t in ts] == [("minimal", True), ("tpl_1", False)]
    assert ts[0].warm_shapes == ["c1-m256-d512"] and ts[1].latest_build_id == "bld_1"
    t = c.templates.get("web")
    assert rec.requests[1].url.path == "/api/v1/sandbox-templates/web"
    assert t.version == "v1" and t.versions[0]["build_id"] == "bld_1" and t.build is None


def test_template_rebuild_with_and_without_spec(make_client):
    c, rec = make_client(ok(dict(BUILD, id="bld_2", version=2), 202))
    b1 = c.templates.rebuild("tpl_1")
    assert rec.requests[0].url.path == "/api/v1/sandbox-templates/tpl_1/builds"
    assert rec.json(0) == {} and rec.requests[0].headers["idempotency-key"]
    assert b1.id == "bld_2" and b1.version == 2
    c.templates.rebuild("web", {"from": "minimal", "steps": [{"run": "true"}]})
    assert rec.json(1) == {"build_spec": {"from": "minimal", "steps": [{"run": "true"}]}}


def test_template_not_found(make_client):
    c, rec = make_client(err(404, "not_found", "template not found"))
    with pytest.raises(NotFoundError):
        c.templates.get("nope")


def test_build_get(make_client):
    c, rec = make_client(ok(dict(BUILD, state="ready", duration_ms=8000)))
    bld = c.templates.builds.get("bld_1")
    assert rec.requests[0].url.path == "/api/v1/sandbox-template-builds/bld_1"
    assert bld.ok and bld.done and bld.duration_ms == 8000


def test_wait_polls_until_ready(make_client):
    c, rec = make_client(ok(dict(BUILD, state="queued")), ok(dict(BUILD, state="building")),
                         ok(dict(BUILD, state="ready")))
    slept = []
    c._sleep = slept.append
    t = hearth.Template.from_dict(dict(TPL, build=BUILD))
    bld = c.templates.wait(t, poll_interval=0.5)
    assert bld.state == "ready" and bld.ok
    assert [r.url.path for r in rec.requests] == ["/api/v1/sandbox-template-builds/bld_1"] * 3
    assert slept == [0.5, 0.5]


def test_wait_failure_raises_with_the_log_tail(make_client):
    lines = [frame(i, "log", seq=i, stream="stdout", text="line %d" % i) for i in range(60)]
    c, rec = make_client(
        ok(dict(BUILD, state="building")),
        ok(dict(BUILD, state="failed", error="step 1 (run) exited with status 3")),
        sse_body(*lines, frame(None, "done", build_id="bld_1", state="failed", error="x")),
    )
    c._sleep = lambda s: None
    with pytest.raises(TemplateBuildError) as ei:
        c.templates.builds.wait("bld_1")
    e = ei.value
    assert e.build.state == "failed" and e.build.id == "bld_1"
    assert e.logs == ["line %d" % i for i in range(10, 60)]  # the last 50 lines
    assert "exited with status 3" in str(e) and "line 59" in str(e) and "line 9\n" not in str(e)
    assert e.code == "template_build_failed"
    logs_req = rec.requests[2]
    assert logs_req.url.path == "/api/v1/sandbox-template-builds/bld_1/logs/stream"
    assert logs_req.headers["accept"] == "text/event-stream"


def test_wait_failure_without_a_readable_log_still_raises(make_client):
    c, rec = make_client(ok(dict(BUILD, state="failed", error="boom")), err(404, "not_found"))
    with pytest.raises(TemplateBuildError, match="boom") as ei:
        c.templates.wait("bld_1")
    assert ei.value.logs == []


def test_wait_timeout(make_client):
    c, rec = make_client(ok(dict(BUILD, state="building")))
    with pytest.raises(HearthTimeoutError, match="still building"):
        c.templates.wait("bld_1", timeout=0)
    assert len(rec.requests) == 1


async def test_async_templates(make_async_client):
    lines = frame(0, "log", seq=0, stream="stderr", text="sh: nope: not found")
    c, rec = make_async_client(
        ok(dict(TPL, build=BUILD), 202),
        ok(dict(BUILD, state="failed", error="step 1 failed")),
        sse_body(lines, frame(None, "done", build_id="bld_1", state="failed")),
    )
    t = await c.templates.create("web", BuildSpec(from_="minimal").run("nope"))
    assert rec.json(0)["build_spec"] == {"from": "minimal", "steps": [{"run": "nope"}]}
    with pytest.raises(TemplateBuildError) as ei:
        await c.templates.wait(t.build)
    assert ei.value.logs == ["sh: nope: not found"]


# ---------------------------------------------------------------- API keys, usage

KEY = {"id": "key_2", "name": "ci", "prefix": "hk_ab12", "tenant_id": "t1", "admin": False,
       "created_at": "2026-01-01T00:00:00.000Z"}


def test_api_keys(make_client):
    c, rec = make_client(ok(dict(KEY, key="hk_ab12secret"), 201), ok([KEY]),
                         ok({"id": "key_2", "revoked": True}))
    k = c.api_keys.create("ci")
    req = rec.requests[0]
    assert req.method == "POST" and req.url.path == "/api/v1/api-keys"
    assert rec.json(0) == {"name": "ci"} and req.headers["idempotency-key"]
    assert k.key == "hk_ab12secret" and k.id == "key_2" and k.prefix == "hk_ab12" and not k.admin
    ks = c.api_keys.list()
    assert [(x.id, x.key) for x in ks] == [("key_2", None)]
    r = c.api_keys.revoke("key_2")
    assert rec.requests[2].method == "DELETE" and rec.requests[2].url.path == "/api/v1/api-keys/key_2"
    assert r["revoked"] is True


def test_api_key_for_other_tenant_forbidden(make_client):
    c, rec = make_client(err(403, "forbidden", "only an admin key can create keys for another tenant"))
    with pytest.raises(AuthenticationError):
        c.api_keys.create("x", tenant_id="other")
    assert rec.json() == {"name": "x", "tenant_id": "other"}


def test_usage_report(make_client):
    report = {"period_start": "2026-01-01T00:00:00.000Z", "period_end": "2026-01-02T00:00:00.000Z",
              "group_by": "sandbox_id",
              "groups": [{"key": "sbx_1", "runtime_sec": 12.5, "provisioned_vcpu_ms": 12500,
                          "provisioned_memory_mb_ms": 3200000, "paused_disk_mb_ms": 0,
                          "estimated_cost_cents": 0.01}]}
    c, rec = make_client(ok(report))
    u = c.usage.get(period_start=dt.datetime(2026, 1, 1), period_end=1767312000, group_by="sandbox_id")
    q = rec.requests[0].url.params
    assert rec.requests[0].url.path == "/api/v1/usage"
    assert q["period_start"] == "2026-01-01T00:00:00Z" and q["period_end"] == "1767312000"
    assert q["group_by"] == "sandbox_id"
    assert u.group_by == "sandbox_id" and len(u.groups) == 1
    g = u.groups[0]
    assert (g.key, g.runtime_sec, g.provisioned_vcpu_ms) == ("sbx_1", 12.5, 12500)


def test_usage_without_params_and_sandbox_usage(make_client):
    c, rec = make_client(ok({"period_start": "x", "period_end": "y", "group_by": None, "groups": []}),
                         ok(SBX), ok({"sandbox_id": "sbx_1", "state": "running", "runtime_sec": 3.0,
                                      "provisioned_vcpu_ms": 3000, "provisioned_memory_mb_ms": 768000,
                                      "paused_disk_mb_ms": 0, "estimated_cost_cents": 0.0}))
    assert c.usage.get().groups == []
    assert not rec.requests[0].url.params
    u = c.sandboxes.get("sbx_1").usage()
    assert rec.requests[2].url.path == "/api/v1/sandboxes/sbx_1/usage"
    assert u.sandbox_id == "sbx_1" and u.runtime_sec == 3.0 and u.provisioned_memory_mb_ms == 768000


async def test_async_keys_and_usage(make_async_client):
    c, rec = make_async_client(ok(dict(KEY, key="hk_x"), 201), ok({"groups": [{"runtime_sec": 1.0}]}))
    assert (await c.api_keys.create()).key == "hk_x"
    assert rec.json(0) == {}
    assert (await c.usage.get(group_by=None)).groups[0].runtime_sec == 1.0


# ---------------------------------------------------------------- files: tree, watch

TREE = {"path": "/w", "name": "w", "type": "dir", "is_dir": True, "size": 4096, "children": [
    {"path": "/w/a.txt", "name": "a.txt", "type": "file", "is_dir": False, "size": 3, "children": []},
    {"path": "/w/d", "name": "d", "type": "dir", "is_dir": True, "size": 4096, "children": [],
     "truncated": True},
]}


def test_files_tree(make_client):
    c, rec = make_client(ok(SBX), ok(TREE))
    t = c.sandboxes.get("sbx_1").files.tree("/w", depth=1)
    req = rec.requests[1]
    assert req.url.path == "/api/v1/sandboxes/sbx_1/files/tree"
    assert req.url.params["path"] == "/w" and req.url.params["depth"] == "1"
    assert isinstance(t, hearth.FileTree) and t.is_dir and [x.name for x in t.children] == ["a.txt", "d"]
    assert t.children[1].truncated and not t.children[0].truncated
    assert [n.path for n in t.walk()] == ["/w", "/w/a.txt", "/w/d"]


def test_files_watch_opens_at_once_and_yields_events(make_client):
    body = (frame(1, "created", event="created", path="/w/a", is_dir=False)
            + b": heartbeat\n\n"
            + frame(2, "renamed", event="renamed", path="/w/b", old_path="/w/a", is_dir=False)
            + frame(3, "deleted", event="deleted", path="/w/b", is_dir=False))
    c, rec = make_client(ok(SBX), sse_body(body))
    sbx = c.sandboxes.get("sbx_1")
    with sbx.files.watch("/w", recursive=True) as w:
        assert len(rec.requests) == 2  # the watch is open before iterating
        evs = list(w)
    req = rec.requests[1]
    assert req.url.path == "/api/v1/sandboxes/sbx_1/files/watch"
    assert req.url.params["path"] == "/w" and req.url.params["recursive"] == "true"
    assert req.headers["accept"] == "text/event-stream"
    assert [(e.event, e.path, e.old_path, e.id) for e in evs] == [
        ("created", "/w/a", None, "1"), ("renamed", "/w/b", "/w/a", "2"), ("deleted", "/w/b", None, "3")]
    assert all(isinstance(e, hearth.FileEvent) and not e.is_dir for e in evs)


def test_files_watch_error_frame_raises_typed_error(make_client):
    c, rec = make_client(ok(SBX), sse_body(frame(None, "error", code="validation_error",
                                                 message="too many watches")))
    with pytest.raises(ValidationError, match="too many watches"):
        list(c.sandboxes.get("sbx_1").files.watch("/w"))
    assert rec.requests[1].url.params["recursive"] == "false"


def test_files_watch_missing_path_raises_on_open(make_client):
    c, rec = make_client(ok(SBX), err(404, "file_not_found", "no such file"))
    with pytest.raises(NotFoundError):
        c.sandboxes.get("sbx_1").files.watch("/nope")


async def test_async_files_watch_and_tree(make_async_client):
    c, rec = make_async_client(ok(SBX), sse_body(frame(1, "modified", event="modified", path="/w/a",
                                                       is_dir=False)), ok(TREE))
    sbx = await c.sandboxes.get("sbx_1")
    async with sbx.files.watch("/w") as w:
        assert len(rec.requests) == 2
        evs = [e async for e in w]
    assert [(e.event, e.path) for e in evs] == [("modified", "/w/a")]
    t = await sbx.files.tree("/w")
    assert t.children[0].size == 3



def test_files_watch_open_is_idempotent_and_close_ends_it(make_client):
    c, rec = make_client(ok(SBX), sse_body(frame(1, "created", event="created", path="/w/a",
                                                 is_dir=False)))
    w = c.sandboxes.get("sbx_1").files.watch("/w")
    assert w.open() is w and len(rec.requests) == 2  # opened once, by watch()
    assert next(w).path == "/w/a"
    w.close()
    assert list(w) == []


# The async watch is the same code (the sync client is generated from it);
# only when it opens differs: on await / async with / first step.

async def test_async_files_watch_opens_on_await(make_async_client):
    body = (frame(1, "created", event="created", path="/w/a", is_dir=False)
            + b": heartbeat\n\n"
            + frame(2, "renamed", event="renamed", path="/w/b", old_path="/w/a", is_dir=False))
    c, rec = make_async_client(ok(SBX), sse_body(body))
    sbx = await c.sandboxes.get("sbx_1")
    w = sbx.files.watch("/w", recursive=True)
    assert len(rec.requests) == 1  # not yet
    assert await w is w and len(rec.requests) == 2  # live once awaited
    assert await w.open() is w and len(rec.requests) == 2
    evs = [e async for e in w]
    assert [(e.event, e.path, e.old_path, e.id) for e in evs] == [
        ("created", "/w/a", None, "1"), ("renamed", "/w/b", "/w/a", "2")]
    assert rec.requests[1].url.params["recursive"] == "true"
    await w.aclose()
    await c.aclose()


async def test_async_files_watch_first_step_opens_it(make_async_client):
    c, rec = make_async_client(ok(SBX), sse_body(frame(1, "created", event="created", path="/w/a",
                                                       is_dir=False)))
    sbx = await c.sandboxes.get("sbx_1")
    assert [e.path async for e in sbx.files.watch("/w")] == ["/w/a"]
    assert len(rec.requests) == 2


async def test_async_files_watch_error_frame_raises_typed_error(make_async_client):
    c, rec = make_async_client(ok(SBX), sse_body(frame(None, "error", code="validation_error",
                                                       message="too many watches")))
    sbx = await c.sandboxes.get("sbx_1")
    with pytest.raises(ValidationError, match="too many watches"):
        async with sbx.files.watch("/w") as w:
            [e async for e in w]


async def test_async_files_watch_missing_path_raises_on_open(make_async_client):
    c, rec = make_async_client(ok(SBX), err(404, "file_not_found", "no such file"))
    sbx = await c.sandboxes.get("sbx_1")
    with pytest.raises(NotFoundError):
        await sbx.files.watch("/nope")


async def test_async_closed_watch_does_not_open(make_async_client):
    c, rec = make_async_client(ok(SBX))
    sbx = await c.sandboxes.get("sbx_1")
    w = sbx.files.watch("/w")
    await w.aclose()
    with pytest.raises(hearth.HearthError, match="closed"):
        await w
    assert len(rec.requests) == 1

# ---------------------------------------------------------------- network policy

POLICY = {"sandbox_id": "sbx_1", "default_effect": "deny",
          "rules": [{"effect": "allow", "destination": "pypi.org", "ports": "443", "protocol": "tcp"}],
          "updated_at": "2026-01-01T00:00:00.000Z"}
OPEN = {"sandbox_id": "sbx_1", "default_effect": "allow", "rules": [],
        "updated_at": "2026-01-01T00:00:01.000Z"}


def test_network_policy_get_set_clear(make_client):
    c, rec = make_client(ok(SBX), ok(POLICY), ok(POLICY), ok(OPEN))
    sbx = c.sandboxes.get("sbx_1")
    p = sbx.network.set_policy("deny", [POLICY["rules"][0]])
    req = rec.requests[1]
    assert req.method == "PUT" and req.url.path == "/api/v1/sandboxes/sbx_1/network-policy"
    assert rec.json(1) == {"default_effect": "deny", "rules": POLICY["rules"]}
    assert p.default_effect == "deny" and p.rules == POLICY["rules"] and p.sandbox_id == "sbx_1"
    assert sbx.network.policy().rules[0]["destination"] == "pypi.org"
    assert rec.requests[2].method == "GET"
    cleared = sbx.network.clear_policy()
    assert rec.requests[3].method == "DELETE"
    assert cleared.default_effect == "allow" and cleared.rules == []


def test_network_policy_bad_effect_and_bad_rule(make_client):
    c, rec = make_client(ok(SBX), err(422, "validation_error", "invalid request",
                                      details=[{"field": "rules[0].ports", "message": "bad"}]))
    sbx = c.sandboxes.get("sbx_1")
    with pytest.raises(ValueError):
        sbx.network.set_policy("maybe")
    assert len(rec.requests) == 1, "nothing sent"
    with pytest.raises(ValidationError) as e:
        sbx.network.set_policy("deny", [{"effect": "allow", "destination": "1.2.3.4", "ports": "0"}])
    assert "rules[0].ports" in str(e.value.details)


async def test_async_network_policy(make_async_client):
    c, rec = make_async_client(ok(SBX), ok(POLICY), ok(OPEN))
    sbx = await c.sandboxes.get("sbx_1")
    p = await sbx.network.set_policy("deny", POLICY["rules"])
    assert rec.requests[1].method == "PUT" and p.default_effect == "deny"
    cleared = await sbx.network.clear_policy()
    assert rec.requests[2].method == "DELETE" and cleared.rules == []
