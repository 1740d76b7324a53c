"""What the sync and async clients share: configuration, the retry policy,
and turning an error response into an exception."""

from __future__ import annotations

import os
import uuid
from typing import Any, Dict, Mapping, Optional, Tuple

import httpx

from ._errors import HearthError, error_class_for

DEFAULT_BASE_URL = "http://127.0.0.1:7070"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
API_PREFIX = "/api/v1"
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 10.0
UPLOAD_CHUNK = 1 << 20

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
