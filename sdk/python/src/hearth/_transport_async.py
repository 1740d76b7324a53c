"""What the async client does by hand where the sync one differs: sleeping,
the WebSocket transport, and handing back work that has not run yet.

``_async.py`` imports these names from here; ``_sync.py``, generated from
it, imports the same names from ``_transport_sync``, which keeps the sync
counterparts with the same signatures (``await`` removed)."""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine, Dict, Generator, Generic, Optional, TypeVar, Union

T = TypeVar("T")

#: What ``files.write`` takes. Typed loosely in the async client, as it
#: always was (it takes the same bytes, text or binary file as the sync one).
FileData = Any


async def sleep(secs: float) -> None:
    await asyncio.sleep(secs)


async def ws_connect(
    url: str, headers: Dict[str, str], user_agent: Optional[str], open_timeout: float
) -> Any:
    """An open WebSocket connection (``websockets``' asyncio client)."""
    from websockets.asyncio.client import connect

    return await connect(
        url, additional_headers=headers, user_agent_header=user_agent, open_timeout=open_timeout
    )


async def ws_recv(ws: Any, timeout: Optional[float]) -> Union[str, bytes]:
    """The next message of ``ws``; raises the builtin :class:`TimeoutError`
    when none arrives within ``timeout`` seconds (None: no limit)."""
    try:
        return await asyncio.wait_for(ws.recv(), timeout)
    except asyncio.TimeoutError:  # not the builtin one before Python 3.11
        raise TimeoutError("no message within %ss" % timeout) from None


class CreateCall(Generic[T]):
    """What ``AsyncSandboxes.create`` (and ``sbx.terminal.create``) returns:
    await it for the sandbox (terminal), or use it directly in ``async
    with`` to destroy the sandbox (close the terminal) on exit."""

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self._coro = coro
        self._value: Any = None

    def __await__(self) -> Generator[Any, None, T]:
        return self._coro.__await__()

    async def __aenter__(self) -> T:
        self._value = await self._coro
        return self._value

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._value is not None:
            await self._value.__aexit__(exc_type, exc, tb)


def create_call(coro: Coroutine[Any, Any, T]) -> CreateCall[T]:
    """The create's work, run when awaited (the sync client runs it at once)."""
    return CreateCall(coro)


H = TypeVar("H", bound="OpensOnAwait")


class OpensOnAwait:
    """``await handle`` opens it (``await handle.open()``) and gives it back.
    The sync counterpart is empty: a sync handle is opened before it is
    returned (see :func:`opened`)."""

    async def open(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def __await__(self: H) -> Generator[Any, None, H]:
        return self.open().__await__()


def opened(handle: H) -> H:
    """``handle`` as it is: ``await``, ``async with`` or the first ``async
    for`` step opens it (the sync client opens it here)."""
    return handle
