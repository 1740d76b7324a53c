"""Documentation sections "Create a sandbox", "Context manager
(auto-destroy)" and "Connect to an existing sandbox"."""

import asyncio
import datetime

import pytest

from conftest import API_KEY, BASE_URL, RUN_TAG, state_of
from hearth import AsyncHearth


def test_the_create_response_has_id_state_template_id_cpu_count_memory_mb_boot_ms_boot_path_created_at(api):
    """"The response body contains id, state, template_id, cpu_count,
    memory_mb, boot_ms, boot_path, and created_at." (checked on the wire)"""
    r = api.post("/sandboxes", json={"tags": [RUN_TAG]})
    assert r.status_code == 201, r.text
    body = r.json()["data"]
    try:
        for field in ("id", "state", "template_id", "cpu_count", "memory_mb", "boot_ms", "boot_path", "created_at"):
            assert body.get(field) is not None, field
        assert body["id"].startswith("sbx_")
        assert body["state"] == "running"
        assert body["template_id"] == "default"
        assert (body["cpu_count"], body["memory_mb"]) == (1, 1024)
        assert body["boot_path"] in ("snapshot", "cold") and body["boot_ms"] > 0
        created = datetime.datetime.fromisoformat(body["created_at"].replace("Z", "+00:00"))
        assert abs((datetime.datetime.now(datetime.timezone.utc) - created).total_seconds()) < 120
    finally:
        api.delete("/sandboxes/%s" % body["id"])


def test_the_id_is_what_every_subsequent_call_needs(client, new):
    """"Save the id — every subsequent call needs it": the id alone reaches
    the sandbox from a fresh client."""
    s = new()
    s.files.write("/workspace/who.txt", "me")
    other = client.sandboxes.get(s.id)
    assert other.files.read_text("/workspace/who.txt") == "me"


def test_with_destroys_the_sandbox_on_exit(client):
    """"The Python SDK supports with ... the sandbox is destroyed on exit"."""
    with client.sandboxes.create(tags=[RUN_TAG]) as s:
        sid = s.id
        assert s.exec.run("echo in").stdout == "in\n"
    assert state_of(client, sid) == "destroyed"


def test_with_destroys_the_sandbox_even_if_an_exception_is_raised(client):
    """"... destroyed on exit even if an exception is raised"; the exception
    itself reaches the caller."""
    seen = {}
    with pytest.raises(ZeroDivisionError):
        with client.sandboxes.create(tags=[RUN_TAG]) as s:
            seen["id"] = s.id
            1 / 0
    assert state_of(client, seen["id"]) == "destroyed"


def test_async_with_destroys_the_sandbox_even_if_an_exception_is_raised(client):
    """"The Python SDK supports with / async with"."""
    seen = {}

    async def main():
        async with AsyncHearth(api_key=API_KEY, base_url=BASE_URL, timeout=120.0) as c:
            with pytest.raises(KeyError):
                async with c.sandboxes.create(tags=[RUN_TAG]) as s:
                    seen["id"] = s.id
                    assert (await s.exec.run("echo async")).stdout == "async\n"
                    raise KeyError("boom")

    asyncio.run(main())
    assert state_of(client, seen["id"]) == "destroyed"


def test_connect_to_an_existing_sandbox(client, new):
    """"Connect to an existing sandbox": `sandboxes.connect(id)` gives a
    handle on the same VM (its processes and files)."""
    s = new()
    p = s.processes.start("sleep 600", name="long")
    again = client.sandboxes.connect(s.id)
    assert again.id == s.id and again.state == "running"
    assert p.pid in [x.pid for x in again.processes.list()]
    assert again.exec.run("echo connected").stdout == "connected\n"
