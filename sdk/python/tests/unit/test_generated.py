"""The sync client is generated from the async one (scripts/unasync_gen.py):
_sync.py must be what the generator makes of _async.py today, and the
generator's rules must do what its docstring says."""

import difflib
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "unasync_gen.py"


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("unasync_gen", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sync_client_is_current(gen):
    expected = gen.generate(gen.SOURCE.read_text(encoding="utf-8"))
    current = gen.TARGET.read_text(encoding="utf-8")
    if current != expected:
        diff = "".join(difflib.unified_diff(
            current.splitlines(keepends=True), expected.splitlines(keepends=True),
            "_sync.py", "generated from _async.py", n=1))
        pytest.fail("_sync.py is stale (edited by hand, or _async.py changed without "
                    "regenerating); regenerate it with:\n    %s\n%s" % (gen.COMMAND, diff[:4000]),
                    pytrace=False)


def test_header_says_generated(gen):
    head = gen.TARGET.read_text(encoding="utf-8").splitlines()[0]
    assert "generated from _async.py" in head.lower() and "do not edit" in head


SRC = '''\
# A note for editors of the source: replaced by the header.
"""Module docs for ``AsyncHearth``."""
import contextlib
from typing import AsyncIterator
import httpx
from ._transport_async import sleep


class AsyncThing(OtherBase):
    """``async with AsyncThing() as t:`` or ``await t.aclose()``."""

    def __init__(self) -> None:
        self._http = httpx.AsyncClient()
        self._stack = contextlib.AsyncExitStack()

    async def aclose(self) -> None:
        await self._http.aclose()

    close = aclose

    async def __aenter__(self) -> "AsyncThing":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def body(self, resp) -> AsyncIterator[bytes]:
        data = await resp.aread()
        async for chunk in resp.aiter_bytes():
            yield chunk
        await self._stack.enter_async_context(x)
        raise StopAsyncIteration
'''


def test_rules(gen):
    out = gen.generate(SRC)
    assert out.startswith(gen.HEADER) and "note for editors" not in out
    assert '"""Module docs for ``Hearth``."""' in out
    assert "from ._transport_sync import sleep" in out
    assert "class Thing(OtherBase):" in out
    assert '"""``with Thing() as t:`` or ``t.close()``."""' in out
    assert "httpx.Client()" in out and "contextlib.ExitStack()" in out
    assert "def close(self) -> None:\n        self._http.close()\n\n    def __enter__" in out
    assert "close = close" not in out
    assert 'def __enter__(self) -> "Thing":' in out and "def __exit__(self, *exc) -> None:" in out
    assert "def body(self, resp) -> Iterator[bytes]:" in out and "from typing import Iterator" in out
    assert "data = resp.read()" in out and "for chunk in resp.iter_bytes():" in out
    assert "self._stack.enter_context(x)" in out and "raise StopIteration" in out
    body = out[len(gen.HEADER):]
    assert "async" not in body and "await" not in body


def test_async_the_rules_miss_is_refused(gen):
    with pytest.raises(SystemExit, match="asyncio"):
        gen.generate("import asyncio\n\n\nasync def f():\n    await asyncio.sleep(1)\n")
