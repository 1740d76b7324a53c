"""Resumable event streams: reconnect with Last-Event-ID after a broken
connection, without repeating or losing events; streams the server cannot
resume (exec, file watch) are not reopened."""

import json

import httpx
import pytest

from hearth import ConflictError, HearthConnectionError, NotFoundError

from conftest import SBX, err, ok


def frame(id_, type_, **data):
    body = dict(data, type=type_)
    head = "event: %s\n" % type_
    if id_ is not None:
        head += "id: %s\n" % id_
    return (head + "data: %s\n\n" % json.dumps(body)).encode()


E1 = frame(1, "sandbox.created", seq=1)
E2 = frame(2, "sandbox.running", seq=2)
E3 = frame(3, "sandbox.exec.started", seq=3)
E4 = frame(4, "sandbox.exec.completed", seq=4)


class Dropping(httpx.SyncByteStream):
    """Sends ``chunks``, then breaks the connection (or ends cleanly)."""

    def __init__(self, *chunks, drop=True):
        self.chunks, self.drop = chunks, drop

    def __iter__(self):
        for c in self.chunks:
            yield c
        if self.drop:
            raise httpx.ReadError("connection reset by peer")


class ADropping(httpx.AsyncByteStream):
    def __init__(self, *chunks, drop=True):
        self.chunks, self.drop = chunks, drop

    async def __aiter__(self):
        for c in self.chunks:
            yield c
        if self.drop:
            raise httpx.ReadError("connection reset by peer")


def sse(*chunks, drop=True, cls=Dropping):
    return lambda req: httpx.Response(200, headers={"content-type": "text/event-stream"},
                                      stream=cls(*chunks, drop=drop))


def ids(evs):
    return [e.id for e in evs]


# ---------------------------------------------------------------- sandbox events

def test_events_resume_after_drop_mid_frame_without_duplicates(make_client):
    # The first connection breaks in the middle of event 3: that partial
    # frame must not be delivered; the second connection replays from
    # Last-Event-ID 2 (here the server also re-sends 2, which is skipped).
    c, rec = make_client(
        ok(SBX),
        sse(E1, E2, E3[:20]),
        sse(E2, E3, E4, drop=False),
    )
    slept = []
    c._sleep = slept.append
    evs = list(c.sandboxes.get("sbx_1").events.stream(types="sandbox.*", after=0))
    assert ids(evs) == ["1", "2", "3", "4"]
    assert [e.type for e in evs] == ["sandbox.created", "sandbox.running",
                                     "sandbox.exec.started", "sandbox.exec.completed"]
    first, second = rec.requests[1], rec.requests[2]
    assert "last-event-id" not in first.headers
    assert second.headers["last-event-id"] == "2"
    for r in (first, second):
        assert r.method == "GET" and r.url.path == "/api/v1/sandboxes/sbx_1/events"
        assert r.headers["accept"] == "text/event-stream"
        assert r.url.params["types"] == "sandbox.*"
    assert len(rec.requests) == 3  # a clean end is not reopened
    assert len(slept) == 1


def test_events_resume_several_drops_keeps_last_id(make_client):
    c, rec = make_client(ok(SBX), sse(E1), sse(E2), sse(E3, E4, drop=False))
    c._sleep = lambda s: None
    evs = list(c.sandboxes.get("sbx_1").events.stream())
    assert ids(evs) == ["1", "2", "3", "4"]
    assert [r.headers.get("last-event-id") for r in rec.requests[1:]] == [None, "1", "2"]


def test_drop_before_any_event_reconnects_without_last_event_id(make_client):
    c, rec = make_client(ok(SBX), sse(b": heartbeat\n\n"), sse(E1, drop=False))
    c._sleep = lambda s: None
    evs = list(c.sandboxes.get("sbx_1").events.stream(after=7))
    assert ids(evs) == ["1"]
    assert "last-event-id" not in rec.requests[2].headers
    assert rec.requests[2].url.params["after"] == "7"


def test_reconnects_are_bounded_with_backoff(make_client):
    def refused(req):
        raise httpx.ConnectError("refused", request=req)

    c, rec = make_client(ok(SBX), sse(E1, E2), refused, retry_backoff=0.1, max_stream_reconnects=3)
    slept = []
    c._sleep = slept.append
    got = []
    with pytest.raises(HearthConnectionError, match="refused"):
        for ev in c.sandboxes.get("sbx_1").events.stream():
            got.append(ev.id)
    assert got == ["1", "2"]
    assert len(rec.requests) == 1 + 1 + 3  # get, first stream, 3 reconnects
    assert all(r.headers["last-event-id"] == "2" for r in rec.requests[2:])
    assert slept == pytest.approx([0.1, 0.2, 0.4])


def test_failure_count_resets_after_progress(make_client):
    # Each connection delivers one new event, then breaks: more drops in
    # total than max_stream_reconnects, but never two in a row.
    c, rec = make_client(ok(SBX), sse(E1), sse(E2), sse(E3), sse(E4, drop=False),
                         max_stream_reconnects=1)
    c._sleep = lambda s: None
    assert ids(c.sandboxes.get("sbx_1").events.stream()) == ["1", "2", "3", "4"]


def test_reconnect_after_503_then_resumes(make_client):
    c, rec = make_client(ok(SBX), sse(E1), err(503, "unavailable"), sse(E2, drop=False))
    c._sleep = lambda s: None
    assert ids(c.sandboxes.get("sbx_1").events.stream()) == ["1", "2"]
    assert rec.requests[3].headers["last-event-id"] == "1"


def test_reconnect_answered_404_is_raised_at_once(make_client):
    c, rec = make_client(ok(SBX), sse(E1), err(404, "sandbox_not_found", "gone"))
    c._sleep = lambda s: None
    got = []
    with pytest.raises(NotFoundError, match="gone"):
        for ev in c.sandboxes.get("sbx_1").events.stream():
            got.append(ev.id)
    assert got == ["1"] and len(rec.requests) == 3


def test_first_connection_4xx_is_not_retried(make_client):
    c, rec = make_client(ok(SBX), err(409, "sandbox_not_running"))
    with pytest.raises(ConflictError):
        list(c.sandboxes.get("sbx_1").events.stream())
    assert len(rec.requests) == 2


def test_tenant_events_stream_resumes(make_client):
    c, rec = make_client(sse(E1, E2), sse(E3, drop=False))
    c._sleep = lambda s: None
    evs = list(c.events.stream(types="sandbox.*,template.*"))
    assert ids(evs) == ["1", "2", "3"]
    assert rec.requests[0].url.path == "/api/v1/events/stream"
    assert rec.requests[1].headers["last-event-id"] == "2"
    assert rec.requests[1].url.params["types"] == "sandbox.*,template.*"


def test_tenant_events_list(make_client):
    c, rec = make_client(ok([{"type": "sandbox.created", "id": "evt_1", "seq": 9, "sandbox_id": "sbx_1"}]))
    evs = c.events.list(after=8)
    req = rec.requests[0]
    assert req.url.path == "/api/v1/events" and req.url.params["after"] == "8"
    assert req.headers["accept"] == "application/json"
    assert evs[0].type == "sandbox.created" and evs[0].id == "9"


# ---------------------------------------------------------------- process stream, build logs

P1 = frame(1, "stdout", line="a", data="a\n", seq=1)
P2 = frame(2, "stdout", line="b", data="b\n", seq=2)
PX = frame(None, "exit", exit_code=0)


def test_process_stream_resumes_and_ends_at_exit(make_client):
    c, rec = make_client(ok(SBX), sse(P1, P2[:10]), sse(P2, PX, drop=False))
    c._sleep = lambda s: None
    evs = list(c.sandboxes.get("sbx_1").processes.stream(7))
    assert [(e.event, e.text) for e in evs] == [("stdout", "a\n"), ("stdout", "b\n"), ("exit", None)]
    assert evs[-1].exit_code == 0
    assert rec.requests[2].url.path == "/api/v1/sandboxes/sbx_1/processes/7/stream"
    assert rec.requests[2].headers["last-event-id"] == "1"


L0 = frame(0, "log", seq=0, stream="system", text="queued build bld_1")
L1 = frame(1, "log", seq=1, stream="stdout", text="hello")
DONE = frame(None, "done", build_id="bld_1", state="ready", error=None)


def test_build_logs_resume_and_stop_at_done(make_client):
    # line 0 has id 0: a resume must still send Last-Event-ID 0
    c, rec = make_client(sse(L0), sse(L0, L1, DONE, b": heartbeat\n\n"))
    c._sleep = lambda s: None
    evs = list(c.templates.builds.logs("bld_1"))
    assert [(e.event, e.text) for e in evs] == [("log", "queued build bld_1"), ("log", "hello"),
                                                ("done", None)]
    assert evs[-1].get("state") == "ready"
    assert rec.requests[0].url.path == "/api/v1/sandbox-template-builds/bld_1/logs/stream"
    assert rec.requests[1].headers["last-event-id"] == "0"
    assert len(rec.requests) == 2


# ---------------------------------------------------------------- not resumable

def test_exec_stream_is_not_resumed(make_client):
    c, rec = make_client(ok(SBX), sse(P1), sse(P2, PX, drop=False))
    got = []
    with pytest.raises(HearthConnectionError, match="connection reset"):
        for ev in c.sandboxes.get("sbx_1").exec.stream("echo a; echo b"):
            got.append(ev.text)
    assert got == ["a\n"] and len(rec.requests) == 2


def test_file_watch_is_not_resumed(make_client):
    W1 = frame(1, "created", event="created", path="/w/a", is_dir=False)
    c, rec = make_client(ok(SBX), sse(W1), sse(W1, drop=False))
    w = c.sandboxes.get("sbx_1").files.watch("/w")
    got = []
    with pytest.raises(HearthConnectionError, match="connection reset"):
        for ev in w:
            got.append(ev.path)
    assert got == ["/w/a"] and len(rec.requests) == 2


# ---------------------------------------------------------------- async

async def test_async_events_resume_without_duplicates(make_async_client):
    c, rec = make_async_client(ok(SBX), sse(E1, E2, E3[:25], cls=ADropping),
                               sse(E2, E3, E4, drop=False, cls=ADropping))
    slept = []

    async def sleep(s):
        slept.append(s)

    c._sleep = sleep
    sbx = await c.sandboxes.get("sbx_1")
    evs = [e async for e in sbx.events.stream()]
    assert ids(evs) == ["1", "2", "3", "4"]
    assert rec.requests[2].headers["last-event-id"] == "2"
    assert len(slept) == 1 and len(rec.requests) == 3


async def test_async_reconnects_are_bounded(make_async_client):
    def refused(req):
        raise httpx.ConnectError("refused", request=req)

    c, rec = make_async_client(sse(E1, cls=ADropping), refused, max_stream_reconnects=2)

    async def sleep(s):
        pass

    c._sleep = sleep
    got = []
    with pytest.raises(HearthConnectionError):
        async for ev in c.events.stream():
            got.append(ev.id)
    assert got == ["1"] and len(rec.requests) == 3


async def test_async_build_logs_resume(make_async_client):
    c, rec = make_async_client(sse(L0, L1[:7], cls=ADropping), sse(L1, DONE, drop=False, cls=ADropping))

    async def sleep(s):
        pass

    c._sleep = sleep
    evs = [e async for e in c.templates.builds.logs("bld_1")]
    assert [e.event for e in evs] == ["log", "log", "done"]
    assert rec.requests[1].headers["last-event-id"] == "0"


async def test_async_exec_stream_is_not_resumed(make_async_client):
    c, rec = make_async_client(ok(SBX), sse(P1, cls=ADropping))
    sbx = await c.sandboxes.get("sbx_1")
    with pytest.raises(HearthConnectionError):
        async for _ in sbx.exec.stream("x"):
            pass
    assert len(rec.requests) == 2


async def test_async_file_watch_is_not_resumed(make_async_client):
    W1 = frame(1, "created", event="created", path="/w/a", is_dir=False)
    c, rec = make_async_client(ok(SBX), sse(W1, cls=ADropping), sse(W1, drop=False, cls=ADropping))
    sbx = await c.sandboxes.get("sbx_1")
    got = []
    with pytest.raises(HearthConnectionError, match="connection reset"):
        async with sbx.files.watch("/w") as w:
            async for ev in w:
                got.append(ev.path)
    assert got == ["/w/a"] and len(rec.requests) == 2
