"""Typed views of the server's JSON objects. Every model keeps the whole
object it was built from in ``raw``, so fields the SDK does not name yet
are still reachable."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Type, TypeVar

T = TypeVar("T")


def from_dict(cls: Type[T], d: Optional[Dict[str, Any]], **extra: Any) -> T:
    """Builds ``cls`` from the keys of ``d`` it knows; ``raw`` gets all of ``d``."""
    d = dict(d or {})
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {k: v for k, v in d.items() if k in names and k != "raw"}
    kwargs.update(extra)
    if "raw" in names:
        kwargs["raw"] = d
    return cls(**kwargs)  # type: ignore[call-arg]


@dataclass
class SandboxInfo:
    """The fields of a sandbox (``GET /sandboxes/{id}``)."""

    id: str = ""
    state: Optional[str] = None
    template_id: Optional[str] = None
    template_version: Optional[str] = None
    cpu_count: Optional[int] = None
    memory_mb: Optional[int] = None
    disk_size_mb: Optional[int] = None
    timeout_sec: Optional[int] = None
    idle_timeout_sec: Optional[int] = None
    always_on: Optional[bool] = None
    persistent: Optional[bool] = None
    env_keys: List[str] = field(default_factory=list)
    metadata: Dict[str, Any] = field(default_factory=dict)
    tags: List[str] = field(default_factory=list)
    name: Optional[str] = None
    external_workspace_id: Optional[str] = None
    external_user_id: Optional[str] = None
    external_project_id: Optional[str] = None
    boot_ms: Optional[int] = None
    boot_path: Optional[str] = None
    created_at: Optional[str] = None
    started_at: Optional[str] = None
    paused_at: Optional[str] = None
    destroyed_at: Optional[str] = None
    timeout_remaining_ms: Optional[int] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def status(self) -> Optional[str]:
        return self.state

    def _update(self, d: Dict[str, Any]) -> None:
        fresh = from_dict(SandboxInfo, d)
        for f in dataclasses.fields(SandboxInfo):
            setattr(self, f.name, getattr(fresh, f.name))


@dataclass
class ExecResult:
    stdout: str = ""
    stderr: str = ""
    exit_code: Optional[int] = None
    duration_ms: Optional[int] = None
    timed_out: bool = False
    truncated: bool = False
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass
class Event:
    """One server-sent event. ``data`` is the decoded JSON (or the text when
    it is not JSON); ``event`` the SSE event name; ``id`` the SSE id."""

    event: str = "message"
    data: Any = None
    id: Optional[str] = None
    raw: str = field(default="", repr=False, compare=False)

    @classmethod
    def from_sse(cls, event: str, data: str, id: Optional[str]) -> "Event":
        try:
            parsed: Any = json.loads(data)
        except ValueError:
            parsed = data
        return cls(event=event, data=parsed, id=id, raw=data)

    def get(self, key: str, default: Any = None) -> Any:
        if isinstance(self.data, dict):
            return self.data.get(key, default)
        return default

    @property
    def type(self) -> str:
        t = self.get("type")
        return t if isinstance(t, str) else self.event

    @property
    def text(self) -> Optional[str]:
        """The raw output chunk of a ``stdout``/``stderr`` exec event."""
        return self.get("data")

    @property
    def line(self) -> Optional[str]:
        return self.get("line")

    @property
    def exit_code(self) -> Optional[int]:
        return self.get("exit_code")


@dataclass
class FileEntry:
    name: str = ""
    path: str = ""
    type: Optional[str] = None
    is_dir: bool = False
    size: Optional[int] = None
    mode: Optional[str] = None
    modified_at: Optional[str] = None
    symlink_target: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class WriteResult:
    path: str = ""
    size_bytes: Optional[int] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class Process:
    pid: Optional[int] = None
    id: Optional[str] = None
    name: Optional[str] = None
    command: Optional[str] = None
    state: Optional[str] = None
    exit_code: Optional[int] = None
    signal: Optional[Any] = None
    started_at: Optional[str] = None
    exited_at: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class ProcessLogs:
    stdout: str = ""
    stderr: str = ""
    dropped_bytes: Optional[int] = None
    truncated: bool = False
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class Snapshot:
    id: str = ""
    sandbox_id: Optional[str] = None
    status: Optional[str] = None
    comment: Optional[str] = None
    size_bytes: Optional[int] = None
    error: Optional[str] = None
    created_at: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class Preview:
    id: str = ""
    sandbox_id: Optional[str] = None
    port: Optional[int] = None
    visibility: Optional[str] = None
    slug: Optional[str] = None
    url: Optional[str] = None
    created_at: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class PreviewShare:
    """The answer of ``POST .../previews/{id}/share``; ``token`` is shown once."""

    id: str = ""
    token: Optional[str] = None
    share_url: Optional[str] = None
    token_id: Optional[str] = None
    share_token_prefix: Optional[str] = None
    share_token_expires_at: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_response(cls, body: Dict[str, Any]) -> "PreviewShare":
        d = body.get("data") or {}
        return cls(
            id=d.get("id", ""),
            token=body.get("preview_token"),
            share_url=body.get("share_url"),
            token_id=d.get("token_id"),
            share_token_prefix=d.get("share_token_prefix"),
            share_token_expires_at=d.get("share_token_expires_at"),
            raw=body,
        )


@dataclass
class EnvVar:
    key: str = ""
    value: Optional[str] = None
    secret: bool = False
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
