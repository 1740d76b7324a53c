"""An incremental server-sent-events decoder: feed it bytes as they arrive,
in chunks of any size, and it returns the events completed so far.

Each event's ``id`` is the ``id:`` of its own frame (None without one), so
a frame the server does not number is not mistaken for a numbered one;
``last_event_id`` keeps the stream's last id, as ``Last-Event-ID`` needs."""

from __future__ import annotations

from typing import List, Optional

from ._models import Event


class SSEDecoder:
    def __init__(self) -> None:
        self._buf = b""
        self._event = ""
        self._data: List[str] = []
        self._id: Optional[str] = None
        self.last_event_id: Optional[str] = None

    def feed(self, chunk: bytes) -> List[Event]:
        self._buf += chunk
        out: List[Event] = []
        while True:
            cut = _line_end(self._buf)
            if cut is None:
                break
            end, nxt = cut
            line = self._buf[:end].decode("utf-8", errors="replace")
            self._buf = self._buf[nxt:]
            ev = self._line(line)
            if ev is not None:
                out.append(ev)
        return out

    def flush(self) -> List[Event]:
        """Ends the stream: a trailing partial line and event are completed."""
        out: List[Event] = []
        if self._buf:
            line = self._buf.rstrip(b"\r").decode("utf-8", errors="replace")
            self._buf = b""
            ev = self._line(line)
            if ev is not None:
                out.append(ev)
        ev = self._line("")
        if ev is not None:
            out.append(ev)
        return out

    def _line(self, line: str) -> Optional[Event]:
        if line == "":
            if not self._data:
                self._event = ""
                self._id = None
                return None
            ev = Event.from_sse(self._event or "message", "\n".join(self._data), self._id)
            self._event = ""
            self._data = []
            self._id = None
            return ev
        if line.startswith(":"):
            return None  # comment (heartbeat)
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._id = value
                self.last_event_id = value
        return None


def _line_end(buf: bytes):
    """(end of line, start of next line) of the first complete line, or None.

    A lone ``\\r`` at the very end may be the first half of ``\\r\\n`` and is
    not taken until more data (or the end) arrives."""
    n = buf.find(b"\n")
    r = buf.find(b"\r")
    if r == -1 and n == -1:
        return None
    if r == -1 or (n != -1 and n < r):
        return n, n + 1
    # \r first
    if r + 1 < len(buf):
        if buf[r + 1 : r + 2] == b"\n":
            return r, r + 2
        return r, r + 1
    return None
