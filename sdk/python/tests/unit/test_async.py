import httpx
import pytest

import hearth
from hearth import HearthConnectionError, NotFoundError, ServerError, ValidationError

from conftest import SBX, err, ok


class AChunked(httpx.AsyncByteStream):
    def __init__(self, data, size):
        self.data, self.size = data, size

    async def __aiter__(self):
        for i in range(0, len(self.data), self.size):
            yield self.data[i:i + self.size]


async def test_async_create_exec_destroy(make_async_client):
    c, rec = make_async_client(ok(SBX, 201), ok({"stdout": "hi\n", "stderr": "", "exit_code": 0, "duration_ms": 2}),
                               ok(dict(SBX, state="destroyed")))
    async with c.sandboxes.create(template_id="minimal", memory_mb=256) as sbx:
        assert isinstance(sbx, hearth.AsyncSandbox)
        r = await sbx.exec.run("echo hi")
        assert r.stdout == "hi\n" and r.exit_code == 0
    assert rec.requests[0].headers["idempotency-key"]
    assert rec.json(0) == {"template_id": "minimal", "memory_mb": 256}
    assert rec.requests[-1].method == "DELETE" and sbx.state == "destroyed"
    await c.aclose()


async def test_async_context_destroys_on_exception(make_async_client):
    c, rec = make_async_client(ok(SBX, 201), ok(dict(SBX, state="destroyed")))
    with pytest.raises(ValueError):
        async with c.sandboxes.create() as sbx:
            raise ValueError("x")
    assert [r.method for r in rec.requests] == ["POST", "DELETE"]


async def test_async_create_awaitable_and_retry(make_async_client):
    c, rec = make_async_client(err(502, "bad_gateway"), ok(SBX, 201))
    sbx = await c.sandboxes.create()
    assert sbx.id == "sbx_1" and len(rec.requests) == 2
    assert rec.requests[0].headers["idempotency-key"] == rec.requests[1].headers["idempotency-key"]


async def test_async_post_without_key_not_retried(make_async_client):
    c, rec = make_async_client(ok(SBX), err(503, "unavailable"))
    sbx = await c.sandboxes.get("sbx_1")
    with pytest.raises(ServerError):
        await sbx.snapshots.create()
    assert len(rec.requests) == 2


async def test_async_errors(make_async_client):
    c, rec = make_async_client(err(404, "sandbox_not_found", "no such sandbox", "req_9"))
    with pytest.raises(NotFoundError) as ei:
        await c.sandboxes.get("sbx_nope")
    assert "req_9" in str(ei.value) and ei.value.code == "sandbox_not_found"
    c2, _ = make_async_client(err(422, "validation_error", details=[{"field": "cpu_count", "message": "bad"}]))
    with pytest.raises(ValidationError) as ei:
        await c2.sandboxes.create(cpu_count=99)
    assert ei.value.details[0]["field"] == "cpu_count"


async def test_async_exec_stream(make_async_client):
    body = (b"event: stdout\nid: 1\ndata: {\"line\":\"x\",\"data\":\"x\\n\"}\n\n"
            b"event: exit\ndata: {\"exit_code\":4}\n\n")
    c, rec = make_async_client(ok(SBX), lambda req: httpx.Response(200, stream=AChunked(body, 5)))
    sbx = await c.sandboxes.get("sbx_1")
    evs = [e async for e in sbx.exec.stream("echo x; exit 4")]
    assert [e.event for e in evs] == ["stdout", "exit"] and evs[-1].exit_code == 4
    assert rec.json(1) == {"command": "echo x; exit 4"}


async def test_async_files(make_async_client):
    c, rec = make_async_client(ok(SBX), ok({"path": "/a", "size_bytes": 2}), httpx.Response(200, content=b"ab"))
    sbx = await c.sandboxes.get("sbx_1")
    w = await sbx.files.write("/a", b"ab")
    assert w.size_bytes == 2 and rec.requests[1].method == "PUT" and rec.bodies[1] == b"ab"
    assert await sbx.files.read_text("/a") == "ab"


async def test_async_connection_error(make_async_client):
    def boom(req):
        raise httpx.ReadTimeout("slow", request=req)

    c, rec = make_async_client(boom)
    with pytest.raises(HearthConnectionError):
        await c.sandboxes.get("sbx_1")
    assert len(rec.requests) == 3
