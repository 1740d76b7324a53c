"""Exceptions raised by the Hearth SDK."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

__all__ = [
    "HearthError",
    "AuthenticationError",
    "NotFoundError",
    "ConflictError",
    "ValidationError",
    "RateLimitError",
    "ServerError",
    "HearthConnectionError",
    "HearthTimeoutError",
    "TemplateBuildError",
]


class HearthError(Exception):
    """Base class of every error the SDK raises.

    ``status`` is the HTTP status (``None`` when no response was received),
    ``code`` the server's error code (e.g. ``sandbox_not_found``),
    ``request_id`` the id to quote when asking the operator, and ``details``
    a list of ``{"field", "message"}`` dicts (filled on 422).
    """

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        code: Optional[str] = None,
        request_id: Optional[str] = None,
        details: Optional[List[Dict[str, Any]]] = None,
        body: Any = None,
        retry_after: Optional[float] = None,
    ) -> None:
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id
        self.details: List[Dict[str, Any]] = list(details or [])
        self.body = body
        self.retry_after = retry_after
        super().__init__(self._format())

    def _format(self) -> str:
        parts = [self.message]
        meta = []
        if self.status is not None:
            meta.append("status %s" % self.status)
        if self.code:
            meta.append("code %s" % self.code)
        if self.request_id:
            meta.append("request_id %s" % self.request_id)
        if meta:
            parts.append("(" + ", ".join(meta) + ")")
        if self.details:
            parts.append(
                "; ".join(
                    "%s: %s" % (d.get("field", "?"), d.get("message", "")) for d in self.details
                )
            )
        return " ".join(parts)


class AuthenticationError(HearthError):
    """401 or 403: missing, invalid or insufficient API key."""


class NotFoundError(HearthError):
    """404: the sandbox (or file, process, snapshot...) does not exist."""


class ConflictError(HearthError):
    """409: the resource is in the wrong state (e.g. ``sandbox_not_running``)."""


class ValidationError(HearthError):
    """422: the request was invalid; ``details`` names each bad field."""


class RateLimitError(HearthError):
    """429: too many requests; ``retry_after`` holds the server's hint (s)."""


class ServerError(HearthError):
    """5xx: the server failed; quote ``request_id`` when reporting it."""


class HearthConnectionError(HearthError):
    """The server could not be reached, or the connection broke or timed out."""


class HearthTimeoutError(HearthError, TimeoutError):
    """A wait (e.g. ``templates.wait``) ran out of time; the operation may
    still finish on the server."""


class TemplateBuildError(HearthError):
    """A template build ended ``failed``. ``build`` is the final
    :class:`~hearth.TemplateBuild` and ``logs`` the last lines of its log
    (also in the message)."""

    def __init__(self, message: str, *, build: Any = None, logs: Optional[List[str]] = None,
                 **kw: Any) -> None:
        self.build = build
        self.logs: List[str] = list(logs or [])
        super().__init__(message, **kw)

    def _format(self) -> str:
        text = super()._format()
        if self.logs:
            text += "\n--- build log (last %d lines) ---\n%s" % (len(self.logs), "\n".join(self.logs))
        return text


_CODE_STATUS = {
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "invalid_state": 409,
    "validation_error": 422,
    "rate_limited": 429,
    "internal": 500,
}


def error_for_code(code: Optional[str], message: str, **kw: Any) -> HearthError:
    """An error reported inside a stream (an SSE ``error`` frame, a
    terminal's error notice), typed by its code as a response would be."""
    code = code or None
    status = _CODE_STATUS.get(code or "")
    if status is None and code:
        if code.endswith("_not_found"):
            status = 404
        elif code.endswith("_not_running"):
            status = 409
    cls = error_class_for(status) if status else HearthError
    return cls(message or (code or "error"), code=code, **kw)


def error_class_for(status: int) -> type:
    if status in (401, 403):
        return AuthenticationError
    if status == 404:
        return NotFoundError
    if status == 409:
        return ConflictError
    if status == 422:
        return ValidationError
    if status == 429:
        return RateLimitError
    if status >= 500:
        return ServerError
    return HearthError
