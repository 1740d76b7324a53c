"""What the sync client does by hand where the async one differs: sleeping,
the WebSocket transport, and running work at once. The counterparts of the
names in ``_transport_async`` (same names, same signatures without
``await``), imported by the generated ``_sync.py``."""

from __future__ import annotations

import time
from typing import Annotated, Any, BinaryIO, Dict, Optional, Protocol, TypeVar, Union

T = TypeVar("T")

#: What ``files.write`` takes: bytes, text, or a binary file object (streamed).
FileData = Union[bytes, bytearray, memoryview, str, BinaryIO]


def sleep(secs: float) -> None:
    time.sleep(secs)


def ws_connect(
    url: str, headers: Dict[str, str], user_agent: Optional[str], open_timeout: float
) -> Any:
    """An open WebSocket connection (``websockets``' sync client)."""
    from websockets.sync.client import connect

    ws = connect(
        url, additional_headers=headers, user_agent_header=user_agent, open_timeout=open_timeout
    )
    # Entered as the context manager it is (websockets >= 17.1 warns
    # otherwise); closing it (the terminal's ``detach``) exits it.
    return ws.__enter__()


def ws_recv(ws: Any, timeout: Optional[float]) -> Union[str, bytes]:
    """The next message of ``ws``; raises the builtin :class:`TimeoutError`
    when none arrives within ``timeout`` seconds (None: no limit)."""
    return ws.recv(timeout=timeout)


#: ``CreateCall[X]`` is ``X``: the sync client's ``create`` returns its result.
CreateCall = Annotated[T, "the result itself: the sync client runs the create at once"]


def create_call(value: T) -> T:
    """The create's result, already there (the async client defers the work)."""
    return value


class OpensOnAwait:
    """Nothing: a sync handle is opened before it is returned (the async
    counterpart makes ``await handle`` open it)."""


class _Opens(Protocol):
    def open(self) -> Any: ...


H = TypeVar("H", bound=_Opens)


def opened(handle: H) -> H:
    """``handle``, opened (``handle.open()``), so it is live when returned."""
    handle.open()
    return handle
