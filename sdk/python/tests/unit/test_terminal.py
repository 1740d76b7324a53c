"""Terminals: the REST calls on the mocked transport, the WebSocket against
a local in-process server that plays the Hearth side of the protocol."""

import json
import re
import threading

import httpx
import pytest
from websockets.sync.server import serve

import hearth
from hearth import HearthConnectionError, HearthTimeoutError, NotFoundError, ValidationError

from conftest import SBX, Recorder, ok


class FakeTerminalServer:
    """Binary frames are echoed back as ``out:<bytes>``; a text resize frame
    is recorded and answered like the server's agent would (``cols`` 999
    gets the server's error notice); the bytes ``exit\\n`` close the socket
    with 1000 as the server does when the shell ends."""

    def __init__(self):
        self.paths, self.headers, self.binary, self.text = [], [], [], []
        self.server = serve(self.handle, "127.0.0.1", 0, process_request=self.check)
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def check(self, conn, request):
        if "/terminals/pty_missing/" in request.path:
            return conn.respond(404, "terminal not found\n")
        return None

    def handle(self, ws):
        self.paths.append(ws.request.path)
        self.headers.append(dict(ws.request.headers))
        ws.send(b"$ ")
        for msg in ws:
            if isinstance(msg, str):
                self.text.append(json.loads(msg))
                if json.loads(msg).get("cols") == 999:
                    ws.send(json.dumps({"type": "error", "code": "validation_error",
                                        "message": "resize needs cols and rows between 1 and 1000"}))
                continue
            self.binary.append(msg)
            if msg == b"exit\n":
                ws.close(1000, "terminal closed")
                return
            if msg.startswith(b"exit "):
                # As the server does when the shell exits with a code.
                ws.close(1000, "exit " + msg[5:].decode().strip())
                return
            ws.send(b"out:" + msg)

    def stop(self):
        self.server.shutdown()
        self.thread.join(5)


@pytest.fixture
def ws_server():
    s = FakeTerminalServer()
    yield s
    s.stop()


TERM = {"id": "pty_1", "ws_url": "ws://public.example/api/v1/sandboxes/sbx_1/terminals/pty_1/ws",
        "pid": 42, "cols": 100, "rows": 30}


def client_for(server, *responses, cls=hearth.Hearth):
    rec = Recorder(*responses)
    transport = httpx.MockTransport(rec)
    c = cls(api_key="hk_test", base_url="http://127.0.0.1:%d" % server.port, transport=transport,
            retry_backoff=0)
    return c, rec


def test_create_request_shape_and_local_validation(make_client):
    c, rec = make_client(ok(SBX), ok(TERM, 201))
    sbx = c.sandboxes.get("sbx_1")
    t = sbx.terminal.create(100, 30, shell="/bin/sh", cwd="/tmp", env={"TERM": "xterm"}, connect=False)
    req = rec.requests[1]
    assert req.method == "POST" and req.url.path == "/api/v1/sandboxes/sbx_1/terminals"
    assert rec.json() == {"cols": 100, "rows": 30, "shell": "/bin/sh", "cwd": "/tmp", "env": {"TERM": "xterm"}}
    assert isinstance(t, hearth.Terminal) and t.id == "pty_1" and t.info.pid == 42
    assert (t.cols, t.rows) == (100, 30) and not t.connected
    # The socket is reached through the client's own base URL, not the
    # server's configured public one.
    assert t.ws_url == "ws://hearth.test/api/v1/sandboxes/sbx_1/terminals/pty_1/ws"
    assert t.info.ws_url.startswith("ws://public.example/")
    with pytest.raises(ValidationError) as ei:
        sbx.terminal.create(0, 1001)
    assert [d["field"] for d in ei.value.details] == ["cols", "rows"]
    assert len(rec.requests) == 2  # refused before any request
    with pytest.raises(ValidationError):
        t.resize(80, 0)


def test_ws_url_scheme_follows_base_url():
    c = hearth.Hearth(api_key="k", base_url="https://h.example/api/v1/")
    t = hearth.Terminal(c, "sbx_1", hearth.TerminalInfo(id="pty_9"))
    assert t.ws_url == "wss://h.example/api/v1/sandboxes/sbx_1/terminals/pty_9/ws"


def test_terminal_session_over_websocket(ws_server):
    c, rec = client_for(ws_server, ok(SBX), ok(TERM, 201), ok({"id": "pty_1", "closed": True}))
    sbx = c.sandboxes.get("sbx_1")
    with sbx.terminal.create(100, 30) as t:
        assert t.connected
        assert t.recv(timeout=5) == b"$ "
        t.send("echo hi\n")  # text goes out as a binary frame (input, not control)
        assert t.read_until(b"hi\n", timeout=5) == b"out:echo hi\n"
        t.send(b"\x03")
        assert t.read_until(re.compile(rb"out:.")) == b"out:\x03"
        t.resize(120, 40)
        assert (t.cols, t.rows) == (120, 40)
        t.send(b"after\n")
        assert t.read_until("after\n") == b"out:after\n"
    assert ws_server.paths == ["/api/v1/sandboxes/sbx_1/terminals/pty_1/ws"]
    h = ws_server.headers[0]
    assert h["authorization"] == "Bearer hk_test"
    assert h["user-agent"].startswith("hearth-python/") and "accept" not in h
    assert ws_server.binary == [b"echo hi\n", b"\x03", b"after\n"]
    assert ws_server.text == [{"type": "resize", "cols": 120, "rows": 40}]
    last = rec.requests[-1]
    assert last.method == "DELETE" and last.url.path == "/api/v1/sandboxes/sbx_1/terminals/pty_1"
    assert not t.connected


def test_read_until_keeps_the_rest_and_times_out(ws_server):
    c, rec = client_for(ws_server, ok(SBX), ok(TERM, 201), ok({"closed": True}))
    t = c.sandboxes.get("sbx_1").terminal.create()
    t.send(b"abcdef")
    assert t.read_until(b"$ ") == b"$ "
    assert t.read_until(b"abc") == b"out:abc"
    assert t.recv(timeout=5) == b"def"  # what followed the marker
    with pytest.raises(HearthTimeoutError, match="never"):
        t.read_until(b"never", timeout=0.3)
    with pytest.raises(TimeoutError):  # HearthTimeoutError is a TimeoutError
        t.recv(timeout=0.1)
    t.close()
    t.close()  # closing twice is harmless
    assert [r.method for r in rec.requests].count("DELETE") == 1


def test_server_error_notice_is_raised(ws_server):
    c, rec = client_for(ws_server, ok(SBX), ok(TERM, 201), ok({"closed": True}))
    t = c.sandboxes.get("sbx_1").terminal.create()
    t.read_until(b"$ ")
    t._socket().send(json.dumps({"type": "resize", "cols": 999, "rows": 10}))  # bypasses local checks
    with pytest.raises(ValidationError, match="between 1 and 1000") as ei:
        t.recv(timeout=5)
    assert ei.value.code == "validation_error"
    t.send(b"still alive")
    assert t.read_until(b"alive") == b"out:still alive"
    t.close()


def test_shell_exit_ends_iteration(ws_server):
    c, rec = client_for(ws_server, ok(SBX), ok(TERM, 201), ok({"closed": True}))
    t = c.sandboxes.get("sbx_1").terminal.create()
    t.send(b"one\n")
    t.send(b"exit\n")
    assert b"".join(t) == b"$ out:one\n"
    assert t.recv() == b"" and not t.connected
    assert t.exit_code is None  # closed without a code
    with pytest.raises(hearth.HearthError, match="terminal closed"):
        t.read_until(b"x", timeout=1)
    t.close()


def test_the_shell_exit_code_comes_from_the_close_reason(ws_server):
    c, rec = client_for(ws_server, ok(SBX), ok(TERM, 201), ok({"closed": True}))
    t = c.sandboxes.get("sbx_1").terminal.create()
    t.send(b"exit 3\n")
    assert b"".join(t) == b"$ "
    assert t.exit_code == 3
    t.close()


def test_close_reasons_parse():
    from hearth import _base as b

    assert b.close_exit_code("exit 0") == 0
    assert b.close_exit_code("exit 130") == 130
    assert b.close_exit_code("terminal closed") is None
    assert b.close_exit_code(None) is None


def test_attach_to_unknown_terminal_is_not_found(ws_server):
    c, rec = client_for(ws_server, ok(SBX), ok({"id": "pty_missing"}))
    sbx = c.sandboxes.get("sbx_1")
    with pytest.raises(NotFoundError) as ei:
        sbx.terminal.connect("pty_missing")
    assert ei.value.status == 404 and "terminal not found" in str(ei.value)


def test_failed_connect_after_create_closes_the_terminal(ws_server):
    c, rec = client_for(ws_server, ok(SBX), ok(dict(TERM, id="pty_missing"), 201), ok({"closed": True}))
    with pytest.raises(NotFoundError):
        c.sandboxes.get("sbx_1").terminal.create()
    last = rec.requests[-1]
    assert last.method == "DELETE" and last.url.path.endswith("/terminals/pty_missing")


def test_connection_refused_is_a_connection_error(ws_server):
    port = ws_server.port
    ws_server.stop()
    c = hearth.Hearth(api_key="k", base_url="http://127.0.0.1:%d" % port)
    t = hearth.Terminal(c, "sbx_1", hearth.TerminalInfo(id="pty_1"))
    with pytest.raises(HearthConnectionError):
        t.connect(open_timeout=2)


def test_terminal_delete(make_client):
    c, rec = make_client(ok(SBX), ok({"id": "pty_1", "closed": True}))
    c.sandboxes.get("sbx_1").terminal.delete("pty_1")
    assert rec.requests[1].method == "DELETE"
    assert rec.requests[1].url.path == "/api/v1/sandboxes/sbx_1/terminals/pty_1"


async def test_async_terminal_session(ws_server):
    c, rec = client_for(ws_server, ok(SBX), ok(TERM, 201), ok({"closed": True}), cls=hearth.AsyncHearth)
    sbx = await c.sandboxes.get("sbx_1")
    async with sbx.terminal.create(100, 30, shell="/bin/sh") as t:
        assert isinstance(t, hearth.AsyncTerminal)
        assert await t.read_until(b"$ ", timeout=5) == b"$ "
        await t.send("echo hi\n")
        assert await t.read_until(b"hi\n", timeout=5) == b"out:echo hi\n"
        await t.resize(90, 20)
        with pytest.raises(HearthTimeoutError):
            await t.recv(timeout=0.2)
        await t.send(b"exit\n")
        assert [chunk async for chunk in t] == []
    assert rec.json(1) == {"cols": 100, "rows": 30, "shell": "/bin/sh"}
    assert ws_server.text == [{"type": "resize", "cols": 90, "rows": 20}]
    assert ws_server.headers[0]["authorization"] == "Bearer hk_test"
    assert rec.requests[-1].method == "DELETE"
    await c.aclose()


def test_terminal_is_its_own_iterator(ws_server):
    c, rec = client_for(ws_server, ok(SBX), ok(TERM, 201), ok({"closed": True}))
    with c.sandboxes.get("sbx_1").terminal.create() as t:
        assert iter(t) is t and next(t) == b"$ "
        t.send(b"exit 0\n")
        with pytest.raises(StopIteration):
            next(t)
        assert t.exit_code == 0


# The async terminal is the same code (the sync client is generated from
# it) over the asyncio WebSocket client: the same behaviour, awaited.

async def test_async_terminal_exit_code_and_error_notice(ws_server):
    c, rec = client_for(ws_server, ok(SBX), ok(TERM, 201), ok({"closed": True}), cls=hearth.AsyncHearth)
    sbx = await c.sandboxes.get("sbx_1")
    t = await sbx.terminal.create()
    assert await t.read_until("$ ", timeout=5) == b"$ "
    await t._socket().send(json.dumps({"type": "resize", "cols": 999, "rows": 10}))
    with pytest.raises(ValidationError, match="between 1 and 1000"):
        await t.recv(timeout=5)
    with pytest.raises(HearthTimeoutError, match="never"):
        await t.read_until(b"never", timeout=0.3)
    await t.send(b"exit 3\n")
    assert [chunk async for chunk in t] == []
    assert t.exit_code == 3 and not t.connected
    await t.aclose()
    await t.close()  # closing twice is harmless
    assert [r.method for r in rec.requests].count("DELETE") == 1
    await c.aclose()


async def test_async_failed_connect_after_create_closes_the_terminal(ws_server):
    c, rec = client_for(ws_server, ok(SBX), ok(dict(TERM, id="pty_missing"), 201), ok({"closed": True}),
                        cls=hearth.AsyncHearth)
    sbx = await c.sandboxes.get("sbx_1")
    with pytest.raises(NotFoundError):
        await sbx.terminal.create()
    last = rec.requests[-1]
    assert last.method == "DELETE" and last.url.path.endswith("/terminals/pty_missing")
    await c.aclose()


async def test_async_connection_refused_is_a_connection_error(ws_server):
    port = ws_server.port
    ws_server.stop()
    c = hearth.AsyncHearth(api_key="k", base_url="http://127.0.0.1:%d" % port)
    t = hearth.AsyncTerminal(c, "sbx_1", hearth.TerminalInfo(id="pty_1"))
    with pytest.raises(HearthConnectionError):
        await t.connect(open_timeout=2)
    await c.aclose()
