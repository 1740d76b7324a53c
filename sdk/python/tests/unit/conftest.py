import json

import httpx
import pytest

import hearth


class Recorder:
    """A MockTransport handler: answers from a queue (or a function) and
    keeps every request it saw."""

    def __init__(self, *responses):
        self.queue = list(responses)
        self.requests = []
        self.bodies = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.bodies.append(request.read())
        r = self.queue.pop(0) if len(self.queue) > 1 else self.queue[0]
        if callable(r):
            r = r(request)
        return r

    def json(self, i=-1):
        return json.loads(self.bodies[i])


def ok(data, status=200, **kw):
    return httpx.Response(status, json={"data": data}, **kw)


def err(status, code, message="boom", request_id="req_123", details=None, headers=None):
    e = {"code": code, "message": message, "request_id": request_id}
    if details is not None:
        e["details"] = details
    return httpx.Response(status, json={"error": e}, headers=headers or {})


SBX = {
    "id": "sbx_1",
    "state": "running",
    "status": "running",
    "template_id": "minimal",
    "cpu_count": 1,
    "memory_mb": 256,
    "disk_size_mb": 512,
    "tags": ["a"],
    "metadata": {},
    "env_keys": [],
    "boot_path": "cold",
    "extra_field": 7,
}


@pytest.fixture
def make_client():
    def make(*responses, **kw):
        rec = Recorder(*responses)
        kw.setdefault("retry_backoff", 0)
        c = hearth.Hearth(api_key="hk_test", base_url="http://hearth.test",
                          transport=httpx.MockTransport(rec), **kw)
        return c, rec
    return make


@pytest.fixture
def make_async_client():
    def make(*responses, **kw):
        rec = Recorder(*responses)
        kw.setdefault("retry_backoff", 0)
        c = hearth.AsyncHearth(api_key="hk_test", base_url="http://hearth.test",
                               transport=httpx.MockTransport(rec), **kw)
        return c, rec
    return make
