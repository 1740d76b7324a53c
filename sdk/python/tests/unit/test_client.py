import io
import json

import httpx
import pytest

import hearth
from hearth import (
    AuthenticationError,
    ConflictError,
    HearthConnectionError,
    HearthError,
    NotFoundError,
    RateLimitError,
    ServerError,
    ValidationError,
)

from conftest import SBX, Recorder, err, ok


# ---------------------------------------------------------------- config

def test_missing_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("HEARTH_API_KEY", raising=False)
    with pytest.raises(HearthError, match="HEARTH_API_KEY"):
        hearth.Hearth()


def test_env_config_and_auth_header(monkeypatch):
    monkeypatch.setenv("HEARTH_API_KEY", "hk_env")
    monkeypatch.setenv("HEARTH_BASE_URL", "http://env.test:9/")
    rec = Recorder(ok(SBX))
    c = hearth.Hearth(transport=httpx.MockTransport(rec))
    c.sandboxes.get("sbx_1")
    req = rec.requests[0]
    assert str(req.url) == "http://env.test:9/api/v1/sandboxes/sbx_1"
    assert req.headers["authorization"] == "Bearer hk_env"


def test_default_base_url(monkeypatch):
    monkeypatch.delenv("HEARTH_BASE_URL", raising=False)
    c = hearth.Hearth(api_key="k")
    assert c.base_url == "http://127.0.0.1:7070"


# ---------------------------------------------------------------- sandboxes

def test_create_sends_only_given_fields_and_an_idempotency_key(make_client):
    c, rec = make_client(ok(SBX, 201))
    sbx = c.sandboxes.create(template_id="minimal", memory_mb=256, tags=["a"], env={"A": "1"})
    req = rec.requests[0]
    assert req.method == "POST" and req.url.path == "/api/v1/sandboxes"
    assert rec.json() == {"template_id": "minimal", "memory_mb": 256, "tags": ["a"], "env": {"A": "1"}}
    key = req.headers["idempotency-key"]
    assert len(key) == 36
    assert isinstance(sbx, hearth.Sandbox)
    assert sbx.id == "sbx_1" and sbx.memory_mb == 256 and sbx.state == "running"
    assert sbx.raw["extra_field"] == 7


def test_data_is_the_object_as_last_sent_like_the_miosa_sdk(make_client):
    failed = dict(SBX, state="error", metadata={"last_error": "vmm exited unexpectedly"})
    c, _ = make_client(ok(SBX, 201), ok(failed))
    sbx = c.sandboxes.create(template_id="minimal")
    assert sbx.data["state"] == "running" and sbx.data["metadata"] == {}
    sbx.refresh()
    assert sbx.data["metadata"]["last_error"] == "vmm exited unexpectedly"
    assert sbx.data is sbx.raw


def test_create_uses_given_idempotency_key(make_client):
    c, rec = make_client(ok(SBX, 201))
    c.sandboxes.create(idempotency_key="my-key")
    assert rec.requests[0].headers["idempotency-key"] == "my-key"
    assert "idempotency_key" not in rec.json()


def test_create_keys_differ_between_calls(make_client):
    c, rec = make_client(ok(SBX, 201))
    c.sandboxes.create()
    c.sandboxes.create()
    assert rec.requests[0].headers["idempotency-key"] != rec.requests[1].headers["idempotency-key"]


def test_list_filters_and_parsing(make_client):
    c, rec = make_client(httpx.Response(200, json={"data": [SBX, dict(SBX, id="sbx_2")],
                                                    "page": {"page": 1, "page_size": 20, "total": 2}}))
    items = c.sandboxes.list(state="running", tags=["a", "b"], template_id="minimal")
    q = rec.requests[0].url.params
    assert q["state"] == "running" and q["tags"] == "a,b" and q["template_id"] == "minimal"
    assert "external_workspace_id" not in q
    assert [s.id for s in items] == ["sbx_1", "sbx_2"]


def test_connect_is_get(make_client):
    c, rec = make_client(ok(SBX))
    s = c.sandboxes.connect("sbx_1")
    assert rec.requests[0].method == "GET" and s.id == "sbx_1"


def test_lifecycle_calls_update_fields(make_client):
    c, rec = make_client(ok(SBX), ok(dict(SBX, state="paused")), ok(dict(SBX, state="running", boot_path="snapshot")),
                         ok(dict(SBX, state="destroyed")))
    s = c.sandboxes.get("sbx_1")
    s.pause()
    assert s.state == "paused"
    s.resume()
    assert s.state == "running" and s.boot_path == "snapshot"
    s.destroy()
    assert s.state == "destroyed"
    assert [(r.method, r.url.path) for r in rec.requests[1:]] == [
        ("POST", "/api/v1/sandboxes/sbx_1/pause"),
        ("POST", "/api/v1/sandboxes/sbx_1/resume"),
        ("DELETE", "/api/v1/sandboxes/sbx_1"),
    ]


def test_fork_body(make_client):
    c, rec = make_client(ok(SBX), ok(dict(SBX, id="sbx_2"), 201))
    s = c.sandboxes.get("sbx_1")
    f = s.fork(snapshot_id="snap_1")
    assert rec.requests[1].url.path == "/api/v1/sandboxes/sbx_1/fork"
    assert rec.json() == {"snapshot_id": "snap_1"}
    assert f.id == "sbx_2" and s.id == "sbx_1"


def test_context_manager_destroys_on_exception(make_client):
    c, rec = make_client(ok(SBX, 201), ok(dict(SBX, state="destroyed")))
    with pytest.raises(RuntimeError, match="inside"):
        with c.sandboxes.create(template_id="minimal") as sbx:
            raise RuntimeError("inside")
    assert rec.requests[-1].method == "DELETE"
    assert rec.requests[-1].url.path == "/api/v1/sandboxes/sbx_1"
    assert sbx.state == "destroyed"


def test_context_manager_keeps_original_exception_if_destroy_fails(make_client):
    c, rec = make_client(ok(SBX, 201), err(500, "internal"))
    with pytest.raises(KeyError):
        with c.sandboxes.create() as sbx:
            raise KeyError("x")
    assert rec.requests[-1].method == "DELETE"


# ---------------------------------------------------------------- exec

def test_exec_run(make_client):
    c, rec = make_client(ok(SBX), ok({"stdout": "hi\n", "stderr": "", "exit_code": 0, "duration_ms": 4,
                                      "timed_out": False, "truncated": False}))
    s = c.sandboxes.get("sbx_1")
    r = s.exec.run("echo hi", cwd="/tmp", env={"X": "1"}, timeout=5)
    assert rec.requests[1].url.path == "/api/v1/sandboxes/sbx_1/exec"
    assert rec.json() == {"command": "echo hi", "cwd": "/tmp", "env": {"X": "1"}, "timeout": 5}
    assert (r.stdout, r.stderr, r.exit_code, r.duration_ms) == ("hi\n", "", 0, 4)
    assert r.ok


def test_exec_run_minimal_body(make_client):
    c, rec = make_client(ok(SBX), ok({"stdout": "", "stderr": "e", "exit_code": 3, "duration_ms": 1}))
    r = c.sandboxes.get("sbx_1").exec.run("exit 3")
    assert rec.json() == {"command": "exit 3"}
    assert r.exit_code == 3 and not r.ok


SSE_BODY = (
    b"event: stdout\nid: 1\ndata: {\"line\":\"a\",\"data\":\"a\\n\",\"seq\":1,\"type\":\"stdout\"}\n\n"
    b": heartbeat\n\n"
    b"event: stderr\nid: 2\ndata: {\"line\":\"b\",\"data\":\"b\\n\",\"seq\":2,\"type\":\"stderr\"}\n\n"
    b"event: exit\ndata: {\"exit_code\":0,\"timed_out\":false,\"duration_ms\":3,\"type\":\"exit\"}\n\n"
)


class ChunkedStream(httpx.SyncByteStream):
    def __init__(self, data, size):
        self.data, self.size = data, size

    def __iter__(self):
        for i in range(0, len(self.data), self.size):
            yield self.data[i:i + self.size]


def test_exec_stream_across_chunks(make_client):
    resp = lambda req: httpx.Response(200, headers={"content-type": "text/event-stream"},
                                      stream=ChunkedStream(SSE_BODY, 7))
    c, rec = make_client(ok(SBX), resp)
    evs = list(c.sandboxes.get("sbx_1").exec.stream("echo a; echo b >&2"))
    req = rec.requests[1]
    assert req.method == "POST" and req.url.path == "/api/v1/sandboxes/sbx_1/exec/stream"
    assert req.headers["accept"] == "text/event-stream"
    assert [e.event for e in evs] == ["stdout", "stderr", "exit"]
    assert evs[0].text == "a\n" and evs[0].line == "a" and evs[0].id == "1"
    assert evs[2].exit_code == 0


def test_stream_error_status_raises_mapped_error(make_client):
    c, rec = make_client(ok(SBX), err(409, "sandbox_not_running", "not running"))
    with pytest.raises(ConflictError, match="not running"):
        list(c.sandboxes.get("sbx_1").exec.stream("true"))


def test_stream_is_not_retried(make_client):
    c, rec = make_client(ok(SBX), err(503, "unavailable"))
    with pytest.raises(ServerError):
        list(c.sandboxes.get("sbx_1").exec.stream("true"))
    assert len(rec.requests) == 2


# ---------------------------------------------------------------- files

def test_files_write_bytes_raw_put(make_client):
    c, rec = make_client(ok(SBX), ok({"path": "/workspace/a.bin", "size_bytes": 3}))
    w = c.sandboxes.get("sbx_1").files.write("/workspace/a.bin", b"\x00\x01\x02")
    req = rec.requests[1]
    assert req.method == "PUT" and req.url.path == "/api/v1/sandboxes/sbx_1/fs/raw"
    assert req.url.params["path"] == "/workspace/a.bin"
    assert req.headers["content-type"] == "application/octet-stream"
    assert rec.bodies[1] == b"\x00\x01\x02"
    assert w.size_bytes == 3


def test_files_write_str_and_fileobj(make_client):
    c, rec = make_client(ok(SBX), ok({"path": "/a", "size_bytes": 2}))
    s = c.sandboxes.get("sbx_1")
    s.files.write("/a", "hé")
    assert rec.bodies[1] == "hé".encode()
    payload = bytes(range(256)) * 10000
    s.files.write("/b", io.BytesIO(payload))
    assert rec.bodies[2] == payload
    assert "content-length" not in rec.requests[2].headers  # streamed (chunked)


def test_files_write_fileobj_is_rewound_on_retry(make_client):
    c, rec = make_client(ok(SBX), err(503, "unavailable"), ok({"path": "/b", "size_bytes": 5}))
    c.sandboxes.get("sbx_1").files.write("/b", io.BytesIO(b"hello"))
    assert rec.bodies[1] == b"hello" and rec.bodies[2] == b"hello"


def test_files_read(make_client):
    c, rec = make_client(ok(SBX), httpx.Response(200, content=b"\xffdata",
                                                  headers={"content-type": "application/octet-stream"}))
    s = c.sandboxes.get("sbx_1")
    assert s.files.read("/x y") == b"\xffdata"
    req = rec.requests[1]
    assert req.url.path == "/api/v1/sandboxes/sbx_1/fs/download" and req.url.params["path"] == "/x y"


def test_files_list_stat_mkdir_remove_rename(make_client):
    entry = {"name": "a", "path": "/w/a", "type": "file", "is_dir": False, "size": 3,
             "mode": "0644", "modified_at": "2026-01-01T00:00:00Z"}
    c, rec = make_client(
        ok(SBX),
        ok({"path": "/w", "entries": [entry]}),
        ok(entry),
        ok(dict(entry, type="dir", is_dir=True)),
        ok({"path": "/w/a", "removed": True}),
        ok(dict(entry, path="/w/b", **{"from": "/w/a", "to": "/w/b"})),
    )
    s = c.sandboxes.get("sbx_1")
    ls = s.files.list("/w")
    assert ls[0].name == "a" and ls[0].size == 3 and ls[0].mode == "0644"
    assert rec.requests[1].method == "GET" and rec.requests[1].url.params["path"] == "/w"
    st = s.files.stat("/w/a")
    assert st.type == "file" and rec.json(2) == {"path": "/w/a"}
    assert rec.requests[2].url.path.endswith("/fs/stat")
    d = s.files.mkdir("/w/d")
    assert d.is_dir and rec.json(3) == {"path": "/w/d"} and rec.requests[3].url.path.endswith("/fs/mkdir")
    s.files.remove("/w/a", recursive=True)
    assert rec.json(4) == {"path": "/w/a", "recursive": True}
    r = s.files.rename("/w/a", "/w/b")
    assert rec.json(5) == {"from": "/w/a", "to": "/w/b"} and r.path == "/w/b"


# ---------------------------------------------------------------- processes, snapshots, previews, env

def test_processes(make_client):
    p = {"id": "proc_7", "pid": 7, "name": "srv", "command": "sleep 9", "state": "running",
         "exit_code": None, "started_at": "2026-01-01T00:00:00Z"}
    c, rec = make_client(ok(SBX), ok(p, 201),
                         httpx.Response(200, json={"data": [p], "page": {"page": 1, "page_size": 100, "total": 1}}),
                         ok(p), ok({"stdout": "out\n", "stderr": "", "dropped_bytes": 0, "truncated": False}),
                         ok(dict(p, state="exited", exit_code=-1)))
    s = c.sandboxes.get("sbx_1")
    started = s.processes.start("sleep 9", name="srv")
    assert rec.json(1) == {"command": "sleep 9", "name": "srv"} and started.pid == 7
    assert [x.pid for x in s.processes.list()] == [7]
    assert s.processes.get(7).state == "running"
    assert rec.requests[3].url.path == "/api/v1/sandboxes/sbx_1/processes/7"
    assert s.processes.logs(7).stdout == "out\n"
    assert rec.requests[4].url.path.endswith("/processes/7/logs")
    k = s.processes.kill(7)
    assert rec.requests[5].method == "DELETE" and k.state == "exited"


def test_snapshots(make_client):
    snap = {"id": "snap_1", "sandbox_id": "sbx_1", "status": "ready", "comment": "c", "size_bytes": 10,
            "created_at": "2026-01-01T00:00:00Z"}
    c, rec = make_client(ok(SBX), ok(snap, 201), ok([snap]), ok(dict(SBX, state="running")),
                         ok({"id": "snap_1", "deleted": True}))
    s = c.sandboxes.get("sbx_1")
    assert s.snapshots.create(comment="c").status == "ready"
    assert rec.json(1) == {"comment": "c"}
    assert s.snapshots.list()[0].id == "snap_1"
    s.snapshots.restore("snap_1")
    assert rec.requests[3].method == "POST" and rec.requests[3].url.path == "/api/v1/sandboxes/sbx_1/restore/snap_1"
    assert s.snapshots.delete("snap_1")["deleted"] is True
    assert rec.requests[4].method == "DELETE"


def test_previews_and_share(make_client):
    pv = {"id": "prv_1", "sandbox_id": "sbx_1", "port": 8000, "visibility": "private", "slug": "abc",
          "url": "http://abc.preview.local"}
    share = {"data": {"id": "prv_1", "token_id": "pt_1", "share_token_prefix": "hp_ab",
                      "share_token_expires_at": "2026-01-01T01:00:00Z"},
             "preview_token": "hp_abcdef", "share_url": "http://abc.preview.local/?preview_token=hp_abcdef"}
    c, rec = make_client(ok(SBX), ok(pv, 201), ok([pv]), httpx.Response(201, json=share))
    s = c.sandboxes.get("sbx_1")
    p = s.previews.create(8000)
    assert rec.json(1) == {"port": 8000, "visibility": "private"} and p.url.startswith("http://abc")
    assert s.previews.list()[0].slug == "abc"
    sh = s.previews.share("prv_1", ttl_seconds=60)
    assert rec.json(3) == {"ttl_seconds": 60}
    assert rec.requests[3].url.path == "/api/v1/sandboxes/sbx_1/previews/prv_1/share"
    assert sh.token == "hp_abcdef" and sh.share_token_prefix == "hp_ab" and "preview_token=" in sh.share_url


def test_env_list(make_client):
    c, rec = make_client(ok(SBX), ok({"vars": [{"key": "A", "value": "1", "secret": False},
                                                {"key": "S", "value": None, "secret": True}]}))
    vs = c.sandboxes.get("sbx_1").env.list()
    assert [(v.key, v.value, v.secret) for v in vs] == [("A", "1", False), ("S", None, True)]


def test_events_stream(make_client):
    body = (b"event: sandbox.running\r\nid: 5\r\ndata: {\"type\":\"sandbox.running\",\"sandbox_id\":\"sbx_1\"}\r\n\r\n"
            b"event: sandbox.exec.started\r\nid: 6\r\ndata: {\"type\":\"sandbox.exec.started\",\r\n\r\n")
    c, rec = make_client(ok(SBX), lambda req: httpx.Response(200, stream=ChunkedStream(body, 3)))
    evs = list(c.sandboxes.get("sbx_1").events.stream(after=4))
    assert rec.requests[1].url.params["after"] == "4"
    assert evs[0].type == "sandbox.running" and evs[0].id == "5" and evs[0].data["sandbox_id"] == "sbx_1"
    # a frame whose data is not JSON is kept as text
    assert evs[1].data == "{\"type\":\"sandbox.exec.started\","


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("status,code,cls", [
    (401, "unauthorized", AuthenticationError),
    (403, "forbidden", AuthenticationError),
    (404, "sandbox_not_found", NotFoundError),
    (409, "sandbox_not_running", ConflictError),
    (422, "validation_error", ValidationError),
    (429, "rate_limited", RateLimitError),
    (500, "internal", ServerError),
    (502, "bad_gateway", ServerError),
    (413, "payload_too_large", HearthError),
])
def test_error_mapping(make_client, status, code, cls):
    c, rec = make_client(err(status, code, "the message", "req_abc"), max_retries=0)
    with pytest.raises(cls) as ei:
        c.sandboxes.get("sbx_x")
    e = ei.value
    assert type(e) is cls
    assert e.status == status and e.code == code and e.request_id == "req_abc"
    assert e.message == "the message"
    assert "the message" in str(e) and "req_abc" in str(e)


def test_validation_details(make_client):
    c, rec = make_client(err(422, "validation_error", "invalid request",
                             details=[{"field": "cpu_count", "message": "must be between 1 and 8"}]))
    with pytest.raises(ValidationError) as ei:
        c.sandboxes.create(cpu_count=99)
    assert ei.value.details == [{"field": "cpu_count", "message": "must be between 1 and 8"}]
    assert "cpu_count" in str(ei.value)
    assert len(rec.requests) == 1  # 4xx is not retried


def test_non_json_error_uses_header_request_id(make_client):
    c, rec = make_client(httpx.Response(502, text="bad gateway", headers={"x-request-id": "req_h"}), max_retries=0)
    with pytest.raises(ServerError) as ei:
        c.sandboxes.get("sbx_1")
    assert ei.value.request_id == "req_h" and "bad gateway" in str(ei.value)


# ---------------------------------------------------------------- retries

def test_get_retried_on_503(make_client):
    c, rec = make_client(err(503, "unavailable"), err(503, "unavailable"), ok(SBX))
    s = c.sandboxes.get("sbx_1")
    assert s.id == "sbx_1" and len(rec.requests) == 3


def test_get_gives_up_after_max_retries(make_client):
    c, rec = make_client(err(503, "unavailable"))
    with pytest.raises(ServerError):
        c.sandboxes.get("sbx_1")
    assert len(rec.requests) == 3


def test_create_retried_with_same_key(make_client):
    c, rec = make_client(err(503, "unavailable"), ok(SBX, 201))
    c.sandboxes.create(template_id="minimal")
    assert len(rec.requests) == 2
    k = {r.headers["idempotency-key"] for r in rec.requests}
    assert len(k) == 1
    assert rec.bodies[0] == rec.bodies[1]


def test_post_without_key_not_retried(make_client):
    c, rec = make_client(ok(SBX), err(503, "unavailable"), ok({"stdout": "", "exit_code": 0}))
    s = c.sandboxes.get("sbx_1")
    with pytest.raises(ServerError):
        s.exec.run("echo once")
    assert len(rec.requests) == 2


def test_connection_error_retried_then_mapped(make_client):
    calls = []

    def boom(req):
        calls.append(req)
        raise httpx.ConnectError("refused", request=req)

    c, rec = make_client(boom)
    with pytest.raises(HearthConnectionError, match="refused"):
        c.sandboxes.get("sbx_1")
    assert len(calls) == 3


def test_connection_error_on_post_without_key_not_retried(make_client):
    calls = []

    def boom(req):
        calls.append(req)
        raise httpx.ConnectError("refused", request=req)

    c, rec = make_client(ok(SBX), boom)
    s = c.sandboxes.get("sbx_1")
    with pytest.raises(HearthConnectionError):
        s.exec.run("x")
    assert len(calls) == 1


def test_backoff_and_retry_after(make_client):
    c, rec = make_client(err(429, "rate_limited", headers={"Retry-After": "1.5"}),
                         err(503, "unavailable"), ok(SBX), retry_backoff=0.2)
    slept = []
    c._sleep = slept.append
    c.sandboxes.get("sbx_1")
    assert slept == [1.5, 0.4]


def test_large_retry_after_not_honoured(make_client):
    c, rec = make_client(err(429, "rate_limited", headers={"Retry-After": "3600"}), ok(SBX), retry_backoff=0.2)
    slept = []
    c._sleep = slept.append
    c.sandboxes.get("sbx_1")
    assert slept == [0.2]
