"""The synchronous client: ``Hearth`` and the ``Sandbox`` handle."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Dict, Iterator, List, Mapping, Optional, Union

import httpx

from . import _base as b
from ._errors import HearthConnectionError, HearthError
from ._models import (
    EnvVar,
    Event,
    ExecResult,
    FileEntry,
    Preview,
    PreviewShare,
    Process,
    ProcessLogs,
    SandboxInfo,
    Snapshot,
    WriteResult,
    from_dict,
)
from ._sse import SSEDecoder

FileData = Union[bytes, bytearray, memoryview, str, BinaryIO]


class Hearth:
    """Synchronous Hearth client.

    ``api_key`` and ``base_url`` default to ``HEARTH_API_KEY`` and
    ``HEARTH_BASE_URL`` (``http://127.0.0.1:7070``). Requests that are safe
    to repeat are retried ``max_retries`` times on 429, 5xx and connection
    errors with exponential backoff starting at ``retry_backoff`` seconds.
    """

    def __init__(
        self,
        api_key: Optional[str] = None,
        base_url: Optional[str] = None,
        *,
        timeout: Union[float, httpx.Timeout, None] = None,
        max_retries: int = 2,
        retry_backoff: float = 0.2,
        headers: Optional[Mapping[str, str]] = None,
        transport: Optional[httpx.BaseTransport] = None,
        http_client: Optional[httpx.Client] = None,
    ) -> None:
        self.api_key, self.base_url = b.resolve_config(api_key, base_url)
        if timeout is None:
            self.timeout = b.DEFAULT_TIMEOUT
        elif isinstance(timeout, httpx.Timeout):
            self.timeout = timeout
        else:
            self.timeout = httpx.Timeout(timeout)
        self.max_retries = max(0, max_retries)
        self.retry_backoff = retry_backoff
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(
            base_url=self.base_url + b.API_PREFIX,
            headers=b.default_headers(self.api_key, headers),
            timeout=self.timeout,
            transport=transport,
        )
        if http_client is not None:
            self._http.base_url = self.base_url + b.API_PREFIX
            self._http.headers.update(b.default_headers(self.api_key, headers))
        self.sandboxes = Sandboxes(self)

    # ------------------------------------------------------------ plumbing

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> "Hearth":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _sleep(self, secs: float) -> None:
        if secs > 0:
            time.sleep(secs)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Optional[Mapping[str, Any]] = None,
        content: Any = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Optional[httpx.Timeout] = None,
    ) -> httpx.Response:
        """Sends one request (retrying when safe); raises on an error status."""
        method = method.upper()
        retryable = b.is_retryable_request(method, headers)
        rewind = None
        if content is not None and hasattr(content, "read"):
            # A file object can be re-sent only if it can be rewound.
            try:
                rewind = content.tell()
            except Exception:
                retryable = False
        attempt = 0
        while True:
            if rewind is not None:
                content.seek(rewind)
            body = _file_chunks(content) if hasattr(content, "read") else content
            try:
                resp = self._http.request(
                    method,
                    path,
                    json=json,
                    params=b.clean(params) or None,
                    content=body,
                    headers=headers,
                    timeout=timeout or self.timeout,
                )
            except httpx.TransportError as e:
                if retryable and attempt < self.max_retries:
                    self._sleep(b.retry_delay(attempt, self.retry_backoff, None))
                    attempt += 1
                    continue
                raise HearthConnectionError("%s %s: %s" % (method, path, e or type(e).__name__)) from e
            if resp.status_code < 400:
                return resp
            err = b.error_from_response(resp)
            if retryable and resp.status_code in b.RETRY_STATUSES and attempt < self.max_retries:
                self._sleep(b.retry_delay(attempt, self.retry_backoff, err.retry_after))
                attempt += 1
                continue
            raise err

    @contextlib.contextmanager
    def stream(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Optional[Mapping[str, Any]] = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Optional[httpx.Timeout] = None,
    ) -> Iterator[httpx.Response]:
        """A streamed response (never retried); raises on an error status."""
        try:
            with self._http.stream(
                method.upper(),
                path,
                json=json,
                params=b.clean(params) or None,
                headers=headers,
                timeout=timeout or b.stream_timeout(self.timeout),
            ) as resp:
                if resp.status_code >= 400:
                    raise b.error_from_response(resp, resp.read())
                yield resp
        except httpx.TransportError as e:
            raise HearthConnectionError("%s %s: %s" % (method, path, e or type(e).__name__)) from e

    def sse(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Optional[Mapping[str, Any]] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> Iterator[Event]:
        """Server-sent events of one request, decoded as they arrive."""
        h = {"Accept": "text/event-stream"}
        h.update(headers or {})
        with self.stream(method, path, json=json, params=params, headers=h) as resp:
            dec = SSEDecoder()
            for chunk in resp.iter_bytes():
                for ev in dec.feed(chunk):
                    yield ev
            for ev in dec.flush():
                yield ev

    def _get(self, path: str, **kw: Any) -> Any:
        return b.unwrap(self.request("GET", path, **kw))

    def _post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return b.unwrap(self.request("POST", path, json=body if body is not None else {}, **kw))

    def _delete(self, path: str, **kw: Any) -> Any:
        return b.unwrap(self.request("DELETE", path, **kw))


def _file_chunks(f: Any) -> Iterator[bytes]:
    while True:
        chunk = f.read(b.UPLOAD_CHUNK)
        if not chunk:
            return
        yield chunk if isinstance(chunk, bytes) else chunk.encode("utf-8")


class Sandboxes:
    def __init__(self, client: Hearth) -> None:
        self._c = client

    def create(
        self,
        template_id: Optional[str] = None,
        *,
        cpu_count: Optional[int] = None,
        memory_mb: Optional[int] = None,
        disk_size_mb: Optional[int] = None,
        timeout_sec: Optional[int] = None,
        idle_timeout_sec: Optional[int] = None,
        always_on: Optional[bool] = None,
        persistent: Optional[bool] = None,
        env: Optional[Mapping[str, str]] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        tags: Optional[List[str]] = None,
        name: Optional[str] = None,
        idempotency_key: Optional[str] = None,
        wait: bool = True,
        **extra: Any,
    ) -> "Sandbox":
        """Creates a sandbox and (by default) waits until it runs. Only the
        arguments given are sent; ``extra`` passes other create fields
        (``secret_env``, ``network``, ``size``, ``external_workspace_id``...).
        An ``Idempotency-Key`` is always sent, so the create is retried safely."""
        body = b.create_body(
            dict(
                template_id=template_id,
                cpu_count=cpu_count,
                memory_mb=memory_mb,
                disk_size_mb=disk_size_mb,
                timeout_sec=timeout_sec,
                idle_timeout_sec=idle_timeout_sec,
                always_on=always_on,
                persistent=persistent,
                env=dict(env) if env is not None else None,
                metadata=dict(metadata) if metadata is not None else None,
                tags=list(tags) if tags is not None else None,
                name=name,
                **extra,
            )
        )
        key = idempotency_key or b.new_idempotency_key()
        d = self._c._post(
            "/sandboxes",
            body,
            params={"wait": None if wait else "false"},
            headers={"Idempotency-Key": key},
            timeout=b.exec_timeout(self._c.timeout, 270.0),
        )
        return Sandbox._from(self._c, d)

    def get(self, sandbox_id: str) -> "Sandbox":
        return Sandbox._from(self._c, self._c._get("/sandboxes/%s" % sandbox_id))

    def connect(self, sandbox_id: str) -> "Sandbox":
        """A handle on an existing sandbox (same as :meth:`get`)."""
        return self.get(sandbox_id)

    def list(
        self,
        *,
        state: Optional[str] = None,
        external_workspace_id: Optional[str] = None,
        tags: Union[List[str], str, None] = None,
        template_id: Optional[str] = None,
        page: Optional[int] = None,
        page_size: Optional[int] = None,
        **filters: Any,
    ) -> List["Sandbox"]:
        if isinstance(tags, (list, tuple)):
            tags = ",".join(tags)
        params = dict(
            state=state,
            external_workspace_id=external_workspace_id,
            tags=tags,
            template_id=template_id,
            page=page,
            page_size=page_size,
            **filters,
        )
        items = self._c._get("/sandboxes", params=params) or []
        return [Sandbox._from(self._c, d) for d in items]


@dataclass(repr=False)
class Sandbox(SandboxInfo):
    """A sandbox: its fields (refreshed by :meth:`refresh`) and operations.

    ``with client.sandboxes.create(...) as sbx:`` destroys it on exit."""

    _client: Any = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        return "Sandbox(id=%r, state=%r, template_id=%r)" % (self.id, self.state, self.template_id)

    @classmethod
    def _from(cls, client: Hearth, d: Dict[str, Any]) -> "Sandbox":
        return from_dict(cls, d, _client=client)

    @property
    def info(self) -> SandboxInfo:
        return from_dict(SandboxInfo, self.raw)

    @property
    def _path(self) -> str:
        return "/sandboxes/%s" % self.id

    @property
    def exec(self) -> "Exec":
        return Exec(self)

    @property
    def files(self) -> "Files":
        return Files(self)

    @property
    def processes(self) -> "Processes":
        return Processes(self)

    @property
    def snapshots(self) -> "Snapshots":
        return Snapshots(self)

    @property
    def previews(self) -> "Previews":
        return Previews(self)

    @property
    def env(self) -> "Env":
        return Env(self)

    @property
    def events(self) -> "Events":
        return Events(self)

    def _set(self, d: Any) -> "Sandbox":
        if isinstance(d, dict):
            self._update(d)
        return self

    def refresh(self) -> "Sandbox":
        return self._set(self._client._get(self._path))

    def pause(self) -> "Sandbox":
        return self._set(self._client._post(self._path + "/pause"))

    def resume(self) -> "Sandbox":
        return self._set(self._client._post(self._path + "/resume"))

    def extend(self, timeout_sec: int) -> "Sandbox":
        return self._set(self._client._post(self._path + "/extend", {"timeout_sec": timeout_sec}))

    def fork(
        self,
        snapshot_id: Optional[str] = None,
        name: Optional[str] = None,
        *,
        timeout_sec: Optional[int] = None,
        metadata: Optional[Mapping[str, Any]] = None,
    ) -> "Sandbox":
        body = b.clean(
            dict(snapshot_id=snapshot_id, name=name, timeout_sec=timeout_sec, metadata=metadata)
        )
        d = self._client._post(
            self._path + "/fork", body, timeout=b.exec_timeout(self._client.timeout, 270.0)
        )
        return Sandbox._from(self._client, d)

    def destroy(self) -> "Sandbox":
        return self._set(self._client._delete(self._path))

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.destroy()
        except HearthError:
            if exc_type is None:
                raise
            # Do not hide the exception that ended the block.


class _Part:
    def __init__(self, sbx: Sandbox) -> None:
        self._s = sbx
        self._c: Hearth = sbx._client
        self._p = sbx._path


class Exec(_Part):
    def run(
        self,
        cmd: str,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        **extra: Any,
    ) -> ExecResult:
        """Runs ``cmd`` through ``/bin/sh -c`` and waits for it. ``timeout``
        is in seconds (server default 60); ``extra`` passes ``user``, ``stdin``."""
        body = b.exec_body(cmd, cwd, env, timeout, extra)
        d = self._c._post(self._p + "/exec", body, timeout=b.exec_timeout(self._c.timeout, timeout))
        return from_dict(ExecResult, d)

    __call__ = run

    def stream(
        self,
        cmd: str,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        **extra: Any,
    ) -> Iterator[Event]:
        """Yields ``stdout``/``stderr`` events (``.text``, ``.line``) as the
        command writes, then one ``exit`` event (``.exit_code``)."""
        body = b.exec_body(cmd, cwd, env, timeout, extra)
        gen = self._c.sse("POST", self._p + "/exec/stream", json=body)
        try:
            for ev in gen:
                yield ev
                if ev.event == "exit":
                    return
        finally:
            gen.close()


class Files(_Part):
    def write(self, path: str, data: FileData, *, mode: Optional[str] = None) -> WriteResult:
        """Writes ``data`` (bytes, text, or a binary file object, streamed)
        to ``path`` through the raw upload route."""
        raw = b.to_bytes(data)
        content: Any = raw if raw is not None else data
        resp = self._c.request(
            "PUT",
            self._p + "/fs/raw",
            params={"path": path, "mode": mode},
            content=content,
            headers={"Content-Type": "application/octet-stream"},
        )
        return from_dict(WriteResult, b.unwrap(resp))

    def read(self, path: str) -> bytes:
        resp = self._c.request("GET", self._p + "/fs/download", params={"path": path})
        return resp.content

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return self.read(path).decode(encoding)

    def list(self, path: str = "/", depth: Optional[int] = None) -> List[FileEntry]:
        d = self._c._get(self._p + "/files", params={"path": path, "depth": depth}) or {}
        return [from_dict(FileEntry, e) for e in d.get("entries", [])]

    def stat(self, path: str) -> FileEntry:
        return from_dict(FileEntry, self._c._post(self._p + "/fs/stat", {"path": path}))

    def exists(self, path: str) -> bool:
        from ._errors import NotFoundError

        try:
            self.stat(path)
            return True
        except NotFoundError:
            return False

    def mkdir(self, path: str, mode: Optional[str] = None) -> FileEntry:
        body = b.clean({"path": path, "mode": mode})
        return from_dict(FileEntry, self._c._post(self._p + "/fs/mkdir", body))

    def remove(self, path: str, recursive: bool = False) -> Dict[str, Any]:
        return self._c._post(self._p + "/fs/remove", {"path": path, "recursive": recursive})

    def rename(self, src: str, dst: str) -> FileEntry:
        return from_dict(FileEntry, self._c._post(self._p + "/fs/rename", {"from": src, "to": dst}))


class Processes(_Part):
    def start(
        self,
        cmd: str,
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        name: Optional[str] = None,
        user: Optional[str] = None,
    ) -> Process:
        body = b.clean({"command": cmd, "cwd": cwd, "env": dict(env) if env else None,
                        "name": name, "user": user})
        return from_dict(Process, self._c._post(self._p + "/processes", body))

    def list(self) -> List[Process]:
        items = self._c._get(self._p + "/processes", params={"page_size": 100}) or []
        return [from_dict(Process, p) for p in items]

    def get(self, pid: Union[int, str]) -> Process:
        return from_dict(Process, self._c._get(self._p + "/processes/%s" % pid))

    def logs(self, pid: Union[int, str], tail: Optional[int] = None) -> ProcessLogs:
        d = self._c._get(self._p + "/processes/%s/logs" % pid, params={"tail": tail})
        return from_dict(ProcessLogs, d)

    def kill(self, pid: Union[int, str]) -> Process:
        return from_dict(Process, self._c._delete(self._p + "/processes/%s" % pid))

    def signal(self, pid: Union[int, str], signal: Union[str, int]) -> Process:
        d = self._c._post(self._p + "/processes/%s/signal" % pid, {"signal": signal})
        return from_dict(Process, d)

    def send_stdin(self, pid: Union[int, str], data: Optional[str] = None, eof: bool = False) -> Process:
        body: Dict[str, Any] = b.clean({"data": data})
        if eof:
            body["eof"] = True
        return from_dict(Process, self._c._post(self._p + "/processes/%s/stdin" % pid, body))

    def stream(self, pid: Union[int, str]) -> Iterator[Event]:
        gen = self._c.sse("GET", self._p + "/processes/%s/stream" % pid)
        try:
            for ev in gen:
                yield ev
                if ev.event == "exit":
                    return
        finally:
            gen.close()


class Snapshots(_Part):
    def create(self, comment: Optional[str] = None) -> Snapshot:
        return from_dict(Snapshot, self._c._post(self._p + "/snapshots", b.clean({"comment": comment})))

    def list(self) -> List[Snapshot]:
        return [from_dict(Snapshot, s) for s in self._c._get(self._p + "/snapshots") or []]

    def get(self, snapshot_id: str) -> Snapshot:
        return from_dict(Snapshot, self._c._get(self._p + "/snapshots/%s" % snapshot_id))

    def restore(self, snapshot_id: str) -> Sandbox:
        d = self._c._post(self._p + "/restore/%s" % snapshot_id, {})
        return self._s._set(d)

    def delete(self, snapshot_id: str) -> Dict[str, Any]:
        return self._c._delete(self._p + "/snapshots/%s" % snapshot_id)


class Previews(_Part):
    def create(self, port: int, visibility: str = "private") -> Preview:
        d = self._c._post(self._p + "/previews", {"port": port, "visibility": visibility})
        return from_dict(Preview, d)

    def list(self) -> List[Preview]:
        return [from_dict(Preview, p) for p in self._c._get(self._p + "/previews") or []]

    def get(self, preview_id: str) -> Preview:
        return from_dict(Preview, self._c._get(self._p + "/previews/%s" % preview_id))

    def delete(self, preview_id: str) -> Preview:
        return from_dict(Preview, self._c._delete(self._p + "/previews/%s" % preview_id))

    def share(self, preview_id: str, ttl_seconds: int = 3600) -> PreviewShare:
        resp = self._c.request(
            "POST", self._p + "/previews/%s/share" % preview_id, json={"ttl_seconds": ttl_seconds}
        )
        return PreviewShare.from_response(resp.json())


class Env(_Part):
    def list(self) -> List[EnvVar]:
        d = self._c._get(self._p + "/env") or {}
        return [from_dict(EnvVar, v) for v in d.get("vars", [])]


class Events(_Part):
    def stream(self, types: Optional[str] = None, after: Optional[int] = None) -> Iterator[Event]:
        """The sandbox's events (replayed from ``after``, then live); runs
        until the caller stops iterating."""
        return self._c.sse("GET", self._p + "/events", params={"types": types, "after": after})

    def list(self, after: Optional[int] = None) -> List[Event]:
        items = self._c._get(self._p + "/events", params={"after": after}) or []
        return [Event(event=e.get("type", "message"), data=e, id=str(e.get("seq"))) for e in items]
