"""What the sync and async clients share: configuration, the retry policy,
and turning an error response into an exception."""

from __future__ import annotations

import datetime as _dt
import json as _json
import os
import re
import uuid
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import httpx

from ._models import Event, FileEvent
from ._errors import (
    HearthConnectionError,
    HearthError,
    TemplateBuildError,
    error_class_for,
    error_for_code,
)

DEFAULT_BASE_URL = "http://127.0.0.1:7070"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
API_PREFIX = "/api/v1"
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 10.0
UPLOAD_CHUNK = 1 << 20
# Resumable streams: reconnect attempts in a row without a new event.
MAX_STREAM_RECONNECTS = 5
MAX_RECONNECT_DELAY = 5.0
# Terminal sizes the server accepts.
MAX_TERMINAL_DIMENSION = 1000
# Template builds: how often ``wait`` polls, how many log lines a failure shows.
BUILD_POLL_INTERVAL = 1.0
BUILD_LOG_TAIL = 50
# Deployments: how long a publish may take past its health checks (server
# default 90 s), and more for a build_command (the server's default
# ``[deployments] build_timeout_sec``).
DEPLOY_HEALTH_TIMEOUT = 90
DEPLOY_EXTRA_WAIT = 120.0
DEPLOY_BUILD_WAIT = 900.0

try:  # pragma: no cover - trivial
    from importlib.metadata import version as _version

    __version__ = _version("hearth")
except Exception:  # pragma: no cover
    __version__ = "0.0.0"


def resolve_config(api_key: Optional[str], base_url: Optional[str]) -> Tuple[str, str]:
    key = api_key if api_key is not None else os.environ.get("HEARTH_API_KEY")
    if not key:
        raise HearthError(
            "no API key: pass api_key=... or set the HEARTH_API_KEY environment variable"
        )
    url = base_url or os.environ.get("HEARTH_BASE_URL") or DEFAULT_BASE_URL
    url = url.rstrip("/")
    if url.endswith(API_PREFIX):
        url = url[: -len(API_PREFIX)]
    return key, url


def default_headers(api_key: str, extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    h = {
        "Authorization": "Bearer %s" % api_key,
        "Accept": "application/json",
        "User-Agent": "hearth-python/%s" % __version__,
    }
    if extra:
        h.update(extra)
    return h


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


def is_retryable_request(method: str, headers: Optional[Mapping[str, str]]) -> bool:
    """Only requests that are safe to send twice are retried: idempotent
    methods, and POSTs/PATCHes that carry an ``Idempotency-Key``."""
    if method.upper() in IDEMPOTENT_METHODS:
        return True
    if headers:
        for k in headers:
            if k.lower() == "idempotency-key":
                return True
    return False


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    try:
        secs = float(value.strip())
    except ValueError:
        return None  # HTTP-date form: ignored, the backoff applies
    return secs if secs >= 0 else None


def retry_delay(attempt: int, backoff: float, retry_after: Optional[float]) -> float:
    """Delay before retry number ``attempt`` (0-based): ``backoff * 2**attempt``,
    or the server's ``Retry-After`` when it is small enough to honour."""
    delay = backoff * (2 ** attempt)
    if retry_after is not None and retry_after <= MAX_RETRY_AFTER:
        delay = max(delay, retry_after)
    return delay


def clean(d: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """``d`` without the keys whose value is None."""
    return {k: v for k, v in (d or {}).items() if v is not None}


def policy_body(default_effect: str, rules: Optional[Any]) -> Dict[str, Any]:
    """The body of ``PUT .../network-policy``; the server validates rules."""
    if default_effect not in ("allow", "deny"):
        raise ValueError("default_effect must be 'allow' or 'deny', not %r" % (default_effect,))
    return {"default_effect": default_effect, "rules": [dict(r) for r in rules or []]}


def error_from_response(resp: httpx.Response, body: Optional[bytes] = None) -> HearthError:
    status = resp.status_code
    raw = body if body is not None else resp.content
    code = None
    message = None
    request_id = resp.headers.get("x-request-id")
    details = []
    parsed: Any = None
    try:
        parsed = httpx.Response(200, content=raw).json() if raw else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        err = parsed["error"]
        code = err.get("code")
        message = err.get("message")
        request_id = err.get("request_id") or request_id
        details = [d for d in (err.get("details") or []) if isinstance(d, dict)]
    if not message:
        text = raw.decode("utf-8", errors="replace").strip() if raw else ""
        message = text[:500] or (resp.reason_phrase or "HTTP error")
    cls = error_class_for(status)
    return cls(
        message,
        status=status,
        code=code,
        request_id=request_id,
        details=details,
        body=parsed,
        retry_after=parse_retry_after(resp.headers.get("retry-after")),
    )


def unwrap(resp: httpx.Response) -> Any:
    """The ``data`` member of a JSON answer (the whole body when absent)."""
    if not resp.content:
        return None
    body = resp.json()
    if isinstance(body, dict) and "data" in body:
        return body["data"]
    return body


def exec_body(
    cmd: str,
    cwd: Optional[str],
    env: Optional[Mapping[str, str]],
    timeout: Optional[float],
    extra: Mapping[str, Any],
) -> Dict[str, Any]:
    body: Dict[str, Any] = {"command": cmd}
    if cwd is not None:
        body["cwd"] = cwd
    if env:
        body["env"] = dict(env)
    if timeout is not None:
        body["timeout"] = timeout
    body.update(clean(extra))
    return body


def exec_timeout(client_timeout: httpx.Timeout, timeout: Optional[float]) -> httpx.Timeout:
    """The HTTP read timeout of an exec: longer than the command may run."""
    secs = (timeout if timeout is not None else 60.0) + 30.0
    read = client_timeout.read
    if read is not None and read >= secs:
        return client_timeout
    return httpx.Timeout(
        connect=client_timeout.connect,
        read=secs,
        write=client_timeout.write,
        pool=client_timeout.pool,
    )


STREAM_TIMEOUT_READ = None  # SSE: heartbeats every 15 s, streams may idle long


def stream_timeout(client_timeout: httpx.Timeout) -> httpx.Timeout:
    return httpx.Timeout(
        connect=client_timeout.connect,
        read=STREAM_TIMEOUT_READ,
        write=client_timeout.write,
        pool=client_timeout.pool,
    )


def create_body(params: Mapping[str, Any]) -> Dict[str, Any]:
    return clean(params)


def to_bytes(data: Any) -> Optional[bytes]:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    return None


def chunks(data: bytes, size: int = UPLOAD_CHUNK):
    for i in range(0, len(data), size):
        yield data[i : i + size]


# ---------------------------------------------------------------- resumable streams


def is_resumable_failure(e: HearthError) -> bool:
    """Whether a resumable stream should reconnect after ``e``: the
    connection broke or could not be made, or the server answered 429/5xx.
    Other error statuses (404, 401...) would only repeat."""
    if isinstance(e, HearthConnectionError):
        return True
    return e.status in RETRY_STATUSES


def reconnect_delay(attempt: int, backoff: float, e: HearthError) -> float:
    return min(retry_delay(attempt, backoff, e.retry_after), MAX_RECONNECT_DELAY)


def is_replay(event_id: Optional[str], last_id: Optional[str]) -> bool:
    """After a reconnect, whether an event is one already delivered: its
    numeric id is not past the last one seen."""
    if event_id is None or last_id is None:
        return False
    try:
        return int(event_id) <= int(last_id)
    except ValueError:
        return False


# ---------------------------------------------------------------- terminals


def terminal_body(
    cols: int,
    rows: int,
    shell: Optional[str],
    cwd: Optional[str],
    env: Optional[Mapping[str, str]],
    user: Optional[str],
) -> Dict[str, Any]:
    check_terminal_size(cols, rows)
    return clean(
        {"cols": cols, "rows": rows, "shell": shell, "cwd": cwd,
         "env": dict(env) if env else None, "user": user}
    )


def check_terminal_size(cols: int, rows: int) -> None:
    from ._errors import ValidationError

    bad = [
        {"field": name, "message": "must be between 1 and %d" % MAX_TERMINAL_DIMENSION}
        for name, v in (("cols", cols), ("rows", rows))
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_TERMINAL_DIMENSION
    ]
    if bad:
        raise ValidationError("invalid terminal size", code="validation_error", details=bad)


def resize_message(cols: int, rows: int) -> str:
    check_terminal_size(cols, rows)
    return _json.dumps({"type": "resize", "cols": cols, "rows": rows})


def terminal_ws_url(base_url: str, sandbox_id: str, terminal_id: str) -> str:
    """The terminal's WebSocket URL on the server the client talks to (the
    server's own ``ws_url`` uses its configured public URL, which may not
    be reachable from here)."""
    if base_url.startswith("https://"):
        base = "wss://" + base_url[len("https://"):]
    elif base_url.startswith("http://"):
        base = "ws://" + base_url[len("http://"):]
    else:
        base = base_url
    return "%s%s/sandboxes/%s/terminals/%s/ws" % (base, API_PREFIX, sandbox_id, terminal_id)


def ws_headers(headers: Mapping[str, str]) -> Tuple[Dict[str, str], Optional[str]]:
    """The client's headers for a WebSocket handshake (without ``Accept``;
    the user agent apart, as websockets sets that header itself)."""
    out: Dict[str, str] = {}
    ua = None
    for k, v in headers.items():
        lk = k.lower()
        if lk == "accept":
            continue
        if lk == "user-agent":
            ua = v
            continue
        out[k] = v
    return out, ua


def ws_connect_error(e: BaseException, url: str) -> HearthError:
    """A failed WebSocket handshake as the SDK's errors: an HTTP error
    answer maps as any response does, anything else is a connection error."""
    resp = getattr(e, "response", None)
    status = getattr(resp, "status_code", None)
    if isinstance(status, int) and status >= 400:
        raw_headers = getattr(resp, "headers", None) or {}
        headers = {k: raw_headers[k] for k in ("x-request-id", "retry-after", "content-type")
                   if k in raw_headers}
        body = bytes(getattr(resp, "body", None) or b"")
        return error_from_response(httpx.Response(status, headers=headers, content=body))
    return HearthConnectionError("WebSocket %s: %s" % (url, e or type(e).__name__))


def close_exit_code(reason: Optional[str]) -> Optional[int]:
    """The shell's exit code from the terminal socket's close reason
    (``exit 3``), or None when the socket closed for another reason."""
    m = re.fullmatch(r"exit (-?\d+)", (reason or "").strip())
    return int(m.group(1)) if m else None


def terminal_notice(text: str) -> Optional[HearthError]:
    """A text frame from the terminal socket: the server's error notice
    (``{"type": "error", "code", "message"}``) as an error, else None."""
    try:
        d = _json.loads(text)
    except ValueError:
        return None
    if isinstance(d, dict) and d.get("type") == "error":
        return error_for_code(d.get("code"), d.get("message") or "terminal error")
    return None


def find_marker(buf: bytes, marker: Any) -> int:
    """The end of the first match of ``marker`` (bytes, text or compiled
    ``re`` pattern) in ``buf``, or -1."""
    if hasattr(marker, "search"):
        m = marker.search(buf)
        return m.end() if m else -1
    mb = marker.encode("utf-8") if isinstance(marker, str) else bytes(marker)
    i = buf.find(mb)
    return -1 if i < 0 else i + len(mb)


# ---------------------------------------------------------------- templates, deployments, usage


def build_failure(build: Any, lines: List[str]) -> TemplateBuildError:
    return TemplateBuildError(
        "template build %s failed: %s" % (build.id, build.error or "no error message"),
        build=build,
        logs=lines[-BUILD_LOG_TAIL:],
        code="template_build_failed",
    )


def deploy_wait(health_timeout_sec: Optional[int], build_command: Optional[str]) -> float:
    """Seconds a publish may take before its answer: the health checks of
    its instances (started together), and its build when it has one."""
    wait = float(health_timeout_sec or DEPLOY_HEALTH_TIMEOUT) + DEPLOY_EXTRA_WAIT
    if build_command is not None:
        wait += DEPLOY_BUILD_WAIT
    return wait


TimeLike = Union[str, int, float, _dt.datetime, None]


def time_param(v: TimeLike) -> Optional[str]:
    """A usage period bound: RFC 3339 text, unix seconds, or a datetime
    (naive ones are taken as UTC)."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, _dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=_dt.timezone.utc)
        return v.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")
    return str(int(v))


def file_event(ev: Event) -> FileEvent:
    """A watch stream frame as a :class:`FileEvent`; the server's ``error``
    frame (the watch failed) is raised."""
    if ev.event == "error":
        raise error_for_code(ev.get("code"), ev.get("message") or "watch failed")
    return FileEvent.from_event(ev)
