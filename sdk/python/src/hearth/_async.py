# The one source of both clients: _sync.py is generated from this file by
# sdk/python/scripts/unasync_gen.py (async/await removed, names mapped:
# AsyncHearth -> Hearth, aclose -> close...). What sync and async genuinely
# do differently (sleeping, the WebSocket, deferred work) is hand-written in
# _transport_async.py and its twin _transport_sync.py. After editing this
# file, regenerate _sync.py; scripts/test-sdk and a unit test check it.
"""The client: ``AsyncHearth`` and the ``AsyncSandbox`` handle, with their
resources (sandboxes, files, processes, terminals, templates...)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import httpx

from . import _base as b
from ._errors import HearthConnectionError, HearthError, HearthTimeoutError, NotFoundError
from ._models import (
    ApiKey,
    AuditEntry,
    BuildSpec,
    CustomDomain,
    DeployResult,
    Deployment,
    DeploymentVersion,
    EnvVar,
    Event,
    ExecResult,
    FileEntry,
    FileEvent,
    FileTree,
    NetworkPolicy,
    Preview,
    PreviewShare,
    Process,
    ProcessLogs,
    SandboxInfo,
    ScopedToken,
    Secret,
    SecretBinding,
    Snapshot,
    Template,
    TemplateBuild,
    TemplateValidation,
    TerminalInfo,
    Usage,
    UsageReport,
    WriteResult,
    from_dict,
    spec_dict,
)
from ._sse import SSEDecoder
from ._transport_async import (
    CreateCall,
    FileData,
    OpensOnAwait,
    create_call,
    opened,
    sleep,
    ws_connect,
    ws_recv,
)


class AsyncHearth:
    """The Hearth client.

    ``api_key`` and ``base_url`` default to ``HEARTH_API_KEY`` and
    ``HEARTH_BASE_URL`` (``http://127.0.0.1:7070``). Requests that are safe
    to repeat are retried ``max_retries`` times on 429, 5xx and connection
    errors with exponential backoff starting at ``retry_backoff`` seconds.
    Resumable event streams reconnect (with ``Last-Event-ID``) up to
    ``max_stream_reconnects`` times in a row after a broken connection.
    """

    def __init__(
        self,
        api_key: Optional[str] = None,
        base_url: Optional[str] = None,
        *,
        timeout: Union[float, httpx.Timeout, None] = None,
        max_retries: int = 2,
        retry_backoff: float = 0.2,
        max_stream_reconnects: int = b.MAX_STREAM_RECONNECTS,
        headers: Optional[Mapping[str, str]] = None,
        transport: Optional[httpx.AsyncBaseTransport] = None,
        http_client: Optional[httpx.AsyncClient] = None,
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
        self.max_stream_reconnects = max(0, max_stream_reconnects)
        self._headers = b.default_headers(self.api_key, headers)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(
            base_url=self.base_url + b.API_PREFIX,
            headers=self._headers,
            timeout=self.timeout,
            transport=transport,
        )
        if http_client is not None:
            self._http.base_url = self.base_url + b.API_PREFIX
            self._http.headers.update(self._headers)
        self.sandboxes = AsyncSandboxes(self)
        self.templates = AsyncTemplates(self)
        self.api_keys = AsyncApiKeys(self)
        self.secrets = AsyncSecrets(self)
        self.deployments = AsyncDeployments(self)
        self.tokens = AsyncTokens(self)
        self.audit = AsyncAudit(self)
        self.usage = AsyncUsageResource(self)
        self.events = AsyncTenantEvents(self)

    # ------------------------------------------------------------ plumbing

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    close = aclose

    async def __aenter__(self) -> "AsyncHearth":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def _sleep(self, secs: float) -> None:
        if secs > 0:
            await sleep(secs)

    async def request(
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
        is_file = content is not None and hasattr(content, "read")
        if is_file:
            # A file object can be re-sent only if it can be rewound.
            try:
                rewind = content.tell()
            except Exception:
                retryable = False
        attempt = 0
        while True:
            if rewind is not None:
                content.seek(rewind)
            body = _file_chunks(content) if is_file else content
            try:
                resp = await self._http.request(
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
                    await self._sleep(b.retry_delay(attempt, self.retry_backoff, None))
                    attempt += 1
                    continue
                raise HearthConnectionError("%s %s: %s" % (method, path, e or type(e).__name__)) from e
            if resp.status_code < 400:
                return resp
            err = b.error_from_response(resp)
            if retryable and resp.status_code in b.RETRY_STATUSES and attempt < self.max_retries:
                await self._sleep(b.retry_delay(attempt, self.retry_backoff, err.retry_after))
                attempt += 1
                continue
            raise err

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Optional[Mapping[str, Any]] = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Optional[httpx.Timeout] = None,
    ) -> AsyncIterator[httpx.Response]:
        """A streamed response (never retried); raises on an error status."""
        try:
            async with self._http.stream(
                method.upper(),
                path,
                json=json,
                params=b.clean(params) or None,
                headers=headers,
                timeout=timeout or b.stream_timeout(self.timeout),
            ) as resp:
                if resp.status_code >= 400:
                    raise b.error_from_response(resp, await resp.aread())
                yield resp
        except httpx.TransportError as e:
            raise HearthConnectionError("%s %s: %s" % (method, path, e or type(e).__name__)) from e

    async def sse(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Optional[Mapping[str, Any]] = None,
        headers: Optional[Mapping[str, str]] = None,
        resume: bool = False,
        timeout: Optional[httpx.Timeout] = None,
    ) -> AsyncIterator[Event]:
        """Server-sent events of one request, decoded as they arrive.

        ``resume`` is for streams whose server numbers events (``id:``) and
        honours ``Last-Event-ID``: when the connection breaks (or cannot be
        made, or answers 429/5xx) the request is sent again with
        ``Last-Event-ID`` set to the last id seen, up to
        ``max_stream_reconnects`` times in a row with backoff; events the
        server sends again are skipped. A stream that ends cleanly is done."""
        last_id: Optional[str] = None
        failures = 0
        resumed = False
        while True:
            h = {"Accept": "text/event-stream"}
            h.update(headers or {})
            if last_id is not None:
                h["Last-Event-ID"] = last_id
            try:
                async with self.stream(
                    method, path, json=json, params=params, headers=h, timeout=timeout
                ) as resp:
                    dec = SSEDecoder()
                    async for chunk in resp.aiter_bytes():
                        for ev in dec.feed(chunk):
                            if resumed and b.is_replay(ev.id, last_id):
                                continue
                            failures = 0
                            if ev.id is not None:
                                last_id = ev.id
                            yield ev
                    for ev in dec.flush():
                        if not (resumed and b.is_replay(ev.id, last_id)):
                            yield ev
                return
            except HearthError as e:
                if not resume or not b.is_resumable_failure(e) or failures >= self.max_stream_reconnects:
                    raise
                await self._sleep(b.reconnect_delay(failures, self.retry_backoff, e))
                failures += 1
                resumed = True

    async def _get(self, path: str, **kw: Any) -> Any:
        return b.unwrap(await self.request("GET", path, **kw))

    async def _post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return b.unwrap(await self.request("POST", path, json=body if body is not None else {}, **kw))

    async def _delete(self, path: str, **kw: Any) -> Any:
        return b.unwrap(await self.request("DELETE", path, **kw))

    async def _put(self, path: str, body: Any, **kw: Any) -> Any:
        return b.unwrap(await self.request("PUT", path, json=body, **kw))


async def _file_chunks(f: Any) -> AsyncIterator[bytes]:
    while True:
        chunk = f.read(b.UPLOAD_CHUNK)
        if not chunk:
            return
        yield chunk if isinstance(chunk, bytes) else chunk.encode("utf-8")


class AsyncSandboxes:
    def __init__(self, client: AsyncHearth) -> None:
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
    ) -> CreateCall["AsyncSandbox"]:
        """Creates a sandbox and (by default) waits until it runs:
        ``sbx = await client.sandboxes.create(...)``, or
        ``async with client.sandboxes.create(...) as sbx:`` to destroy it on
        exit. Only the arguments given are sent; ``extra`` passes other
        create fields (``secret_env``, ``network``, ``size``,
        ``external_workspace_id``...). An ``Idempotency-Key`` is always sent,
        so the create is retried safely."""
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

        async def run() -> AsyncSandbox:
            d = await self._c._post(
                "/sandboxes",
                body,
                params={"wait": None if wait else "false"},
                headers={"Idempotency-Key": key},
                timeout=b.exec_timeout(self._c.timeout, 270.0),
            )
            return AsyncSandbox._from(self._c, d)

        return create_call(run())

    async def get(self, sandbox_id: str) -> "AsyncSandbox":
        return AsyncSandbox._from(self._c, await self._c._get("/sandboxes/%s" % sandbox_id))

    async def connect(self, sandbox_id: str) -> "AsyncSandbox":
        """A handle on an existing sandbox (same as :meth:`get`)."""
        return await self.get(sandbox_id)

    async def list(
        self,
        *,
        state: Optional[str] = None,
        external_workspace_id: Optional[str] = None,
        tags: Union[List[str], str, None] = None,
        template_id: Optional[str] = None,
        page: Optional[int] = None,
        page_size: Optional[int] = None,
        **filters: Any,
    ) -> List["AsyncSandbox"]:
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
        items = await self._c._get("/sandboxes", params=params) or []
        return [AsyncSandbox._from(self._c, d) for d in items]


@dataclass(repr=False)
class AsyncSandbox(SandboxInfo):
    """A sandbox: its fields (refreshed by :meth:`refresh`) and operations.

    ``async with client.sandboxes.create(...) as sbx:`` destroys it on exit."""

    _client: Any = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        return "AsyncSandbox(id=%r, state=%r, template_id=%r)" % (
            self.id,
            self.state,
            self.template_id,
        )

    @classmethod
    def _from(cls, client: AsyncHearth, d: Dict[str, Any]) -> "AsyncSandbox":
        return from_dict(cls, d, _client=client)

    @property
    def info(self) -> SandboxInfo:
        return from_dict(SandboxInfo, self.raw)

    @property
    def _path(self) -> str:
        return "/sandboxes/%s" % self.id

    @property
    def exec(self) -> "AsyncExec":
        return AsyncExec(self)

    @property
    def files(self) -> "AsyncFiles":
        return AsyncFiles(self)

    @property
    def processes(self) -> "AsyncProcesses":
        return AsyncProcesses(self)

    @property
    def snapshots(self) -> "AsyncSnapshots":
        return AsyncSnapshots(self)

    @property
    def previews(self) -> "AsyncPreviews":
        return AsyncPreviews(self)

    @property
    def env(self) -> "AsyncEnv":
        return AsyncEnv(self)

    @property
    def events(self) -> "AsyncEvents":
        return AsyncEvents(self)

    @property
    def network(self) -> "AsyncNetwork":
        return AsyncNetwork(self)

    @property
    def terminal(self) -> "AsyncTerminals":
        return AsyncTerminals(self)

    def _set(self, d: Any) -> "AsyncSandbox":
        if isinstance(d, dict):
            self._update(d)
        return self

    async def refresh(self) -> "AsyncSandbox":
        return self._set(await self._client._get(self._path))

    async def pause(self) -> "AsyncSandbox":
        return self._set(await self._client._post(self._path + "/pause"))

    async def resume(self) -> "AsyncSandbox":
        return self._set(await self._client._post(self._path + "/resume"))

    async def extend(self, timeout_sec: int) -> "AsyncSandbox":
        return self._set(await self._client._post(self._path + "/extend", {"timeout_sec": timeout_sec}))

    async def fork(
        self,
        snapshot_id: Optional[str] = None,
        name: Optional[str] = None,
        *,
        timeout_sec: Optional[int] = None,
        metadata: Optional[Mapping[str, Any]] = None,
    ) -> "AsyncSandbox":
        body = b.clean(
            dict(snapshot_id=snapshot_id, name=name, timeout_sec=timeout_sec, metadata=metadata)
        )
        d = await self._client._post(
            self._path + "/fork", body, timeout=b.exec_timeout(self._client.timeout, 270.0)
        )
        return AsyncSandbox._from(self._client, d)

    async def destroy(self) -> "AsyncSandbox":
        return self._set(await self._client._delete(self._path))

    async def deploy(
        self,
        port: int,
        start_command: str,
        *,
        name: Optional[str] = None,
        deployment_id: Optional[str] = None,
        health_check_path: str = "/",
        health_timeout_sec: Optional[int] = None,
        promote: bool = True,
        build_command: Optional[str] = None,
        output_path: Optional[str] = None,
        replicas: Optional[int] = None,
        domain: Optional[str] = None,
        custom_domain: Optional[str] = None,
        external_workspace_id: Optional[str] = None,
        external_user_id: Optional[str] = None,
        external_project_id: Optional[str] = None,
        wait: bool = True,
    ) -> DeployResult:
        """Publishes this sandbox: a new deployment (``name``) or a new
        version of one (``deployment_id``). Answers once the new version
        serves (``promoted``) or failed its build or health check
        (``version.error``).

        ``build_command`` runs once, in a clone of the sandbox (its output
        is the version's ``build_log``); the build and start commands run
        in ``output_path`` (absolute) when given. ``replicas`` (1-20)
        instances serve, load-balanced. ``domain`` names a new deployment's
        URL under the apps domain (3-63 of ``a-z``, ``0-9``, ``-``);
        ``custom_domain`` adds a custom domain, pending verification
        (``result.custom_domain``). External ids default to the sandbox's.
        ``wait=False`` answers once the snapshot is taken (the version
        ``building``); poll ``client.deployments.version(...)``. Only the
        arguments given are sent."""
        body = b.clean({"name": name, "deployment_id": deployment_id, "port": port,
                        "start_command": start_command, "health_check_path": health_check_path,
                        "health_timeout_sec": health_timeout_sec, "promote": promote,
                        "build_command": build_command, "output_path": output_path,
                        "replicas": replicas, "domain": domain, "custom_domain": custom_domain,
                        "external_workspace_id": external_workspace_id,
                        "external_user_id": external_user_id,
                        "external_project_id": external_project_id,
                        "wait": None if wait else False})
        patience = b.deploy_wait(health_timeout_sec, build_command) if wait else 0.0
        d = await self._client._post(self._path + "/deploy", body,
                                     timeout=b.exec_timeout(self._client.timeout, patience))
        return DeployResult.of(d)

    async def usage(self, period_start: b.TimeLike = None, period_end: b.TimeLike = None) -> Usage:
        """The sandbox's metered usage (runtime, vCPU and memory time, cost)."""
        params = {"period_start": b.time_param(period_start), "period_end": b.time_param(period_end)}
        return from_dict(Usage, await self._client._get(self._path + "/usage", params=params))

    async def __aenter__(self) -> "AsyncSandbox":
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            await self.destroy()
        except HearthError:
            if exc_type is None:
                raise
            # Do not hide the exception that ended the block.


class _Part:
    def __init__(self, sbx: AsyncSandbox) -> None:
        self._s = sbx
        self._c: AsyncHearth = sbx._client
        self._p = sbx._path


class AsyncExec(_Part):
    async def run(
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
        d = await self._c._post(self._p + "/exec", body, timeout=b.exec_timeout(self._c.timeout, timeout))
        return from_dict(ExecResult, d)

    __call__ = run

    def stream(
        self,
        cmd: str,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        **extra: Any,
    ) -> AsyncIterator[Event]:
        """Yields ``stdout``/``stderr`` events (``.text``, ``.line``) as the
        command writes, then one ``exit`` event (``.exit_code``)."""
        body = b.exec_body(cmd, cwd, env, timeout, extra)
        return _until_exit(self._c.sse("POST", self._p + "/exec/stream", json=body))


async def _until_exit(events: AsyncIterator[Event]) -> AsyncIterator[Event]:
    """The events of an exec or process stream, through its ``exit``; the
    connection is closed after it (or when the caller stops early)."""
    try:
        async for ev in events:
            yield ev
            if ev.event == "exit":
                return
    finally:
        await events.aclose()  # type: ignore[attr-defined]


class AsyncFiles(_Part):
    async def write(self, path: str, data: FileData, *, mode: Optional[str] = None) -> WriteResult:
        """Writes ``data`` (bytes, text, or a binary file object, streamed)
        to ``path`` through the raw upload route."""
        raw = b.to_bytes(data)
        content: Any = raw if raw is not None else data
        resp = await self._c.request(
            "PUT",
            self._p + "/fs/raw",
            params={"path": path, "mode": mode},
            content=content,
            headers={"Content-Type": "application/octet-stream"},
        )
        return from_dict(WriteResult, b.unwrap(resp))

    async def read(self, path: str) -> bytes:
        resp = await self._c.request("GET", self._p + "/fs/download", params={"path": path})
        return resp.content

    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        data = await self.read(path)
        return data.decode(encoding)

    async def list(self, path: str = "/", depth: Optional[int] = None) -> List[FileEntry]:
        d = await self._c._get(self._p + "/files", params={"path": path, "depth": depth}) or {}
        return [from_dict(FileEntry, e) for e in d.get("entries", [])]

    async def stat(self, path: str) -> FileEntry:
        return from_dict(FileEntry, await self._c._post(self._p + "/fs/stat", {"path": path}))

    async def exists(self, path: str) -> bool:
        try:
            await self.stat(path)
            return True
        except NotFoundError:
            return False

    async def mkdir(self, path: str, mode: Optional[str] = None) -> FileEntry:
        body = b.clean({"path": path, "mode": mode})
        return from_dict(FileEntry, await self._c._post(self._p + "/fs/mkdir", body))

    async def remove(self, path: str, recursive: bool = False) -> Dict[str, Any]:
        return await self._c._post(self._p + "/fs/remove", {"path": path, "recursive": recursive})

    async def rename(self, src: str, dst: str) -> FileEntry:
        d = await self._c._post(self._p + "/fs/rename", {"from": src, "to": dst})
        return from_dict(FileEntry, d)

    async def tree(self, path: str = "/", depth: Optional[int] = None) -> FileTree:
        """``path`` and what is below it, ``depth`` levels down (server
        default 3, max 10), as nested :class:`FileTree` nodes."""
        d = await self._c._get(self._p + "/files/tree", params={"path": path, "depth": depth})
        return FileTree.from_dict(d)

    def watch(self, path: str, recursive: bool = False) -> "AsyncFileWatch":
        """Watches ``path`` (and below it with ``recursive``). The watch is
        live once ``w = await sbx.files.watch(path)`` returns (or once
        ``async with sbx.files.watch(path) as w:`` is entered), so changes
        made afterwards are seen. Iterate it for :class:`FileEvent`s as they
        happen; leave the ``with`` block (or call ``w.aclose()``) to stop.
        Not resumable: the server starts a fresh watch per connection, so a
        broken connection raises :class:`HearthConnectionError`."""
        w = AsyncFileWatch(self._c, self._p + "/files/watch", {"path": path, "recursive": recursive})
        return opened(w)


class AsyncProcesses(_Part):
    async def start(
        self,
        cmd: str,
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        name: Optional[str] = None,
        user: Optional[str] = None,
        secrets: Optional[List[str]] = None,
    ) -> Process:
        """Starts ``cmd`` in the background; ``secrets`` names vault secrets
        to add to its env (beside those bound to the sandbox)."""
        body = b.clean({"command": cmd, "cwd": cwd, "env": dict(env) if env else None,
                        "name": name, "user": user, "secrets": list(secrets) if secrets else None})
        return from_dict(Process, await self._c._post(self._p + "/processes", body))

    async def list(self) -> List[Process]:
        items = await self._c._get(self._p + "/processes", params={"page_size": 100}) or []
        return [from_dict(Process, p) for p in items]

    async def get(self, pid: Union[int, str]) -> Process:
        return from_dict(Process, await self._c._get(self._p + "/processes/%s" % pid))

    async def logs(self, pid: Union[int, str], tail: Optional[int] = None) -> ProcessLogs:
        d = await self._c._get(self._p + "/processes/%s/logs" % pid, params={"tail": tail})
        return from_dict(ProcessLogs, d)

    async def kill(self, pid: Union[int, str]) -> Process:
        return from_dict(Process, await self._c._delete(self._p + "/processes/%s" % pid))

    async def signal(self, pid: Union[int, str], signal: Union[str, int]) -> Process:
        d = await self._c._post(self._p + "/processes/%s/signal" % pid, {"signal": signal})
        return from_dict(Process, d)

    async def send_stdin(
        self, pid: Union[int, str], data: Optional[str] = None, eof: bool = False
    ) -> Process:
        body: Dict[str, Any] = b.clean({"data": data})
        if eof:
            body["eof"] = True
        return from_dict(Process, await self._c._post(self._p + "/processes/%s/stdin" % pid, body))

    def stream(self, pid: Union[int, str]) -> AsyncIterator[Event]:
        """Replays the process's buffered output, then follows it until
        ``exit``; resumes after a broken connection without repeating output."""
        return _until_exit(self._c.sse("GET", self._p + "/processes/%s/stream" % pid, resume=True))


class AsyncSnapshots(_Part):
    async def create(self, comment: Optional[str] = None) -> Snapshot:
        d = await self._c._post(self._p + "/snapshots", b.clean({"comment": comment}))
        return from_dict(Snapshot, d)

    async def list(self) -> List[Snapshot]:
        return [from_dict(Snapshot, s) for s in await self._c._get(self._p + "/snapshots") or []]

    async def get(self, snapshot_id: str) -> Snapshot:
        return from_dict(Snapshot, await self._c._get(self._p + "/snapshots/%s" % snapshot_id))

    async def restore(self, snapshot_id: str) -> AsyncSandbox:
        d = await self._c._post(self._p + "/restore/%s" % snapshot_id, {})
        return self._s._set(d)

    async def delete(self, snapshot_id: str) -> Dict[str, Any]:
        return await self._c._delete(self._p + "/snapshots/%s" % snapshot_id)


class AsyncPreviews(_Part):
    async def create(self, port: int, visibility: str = "private") -> Preview:
        d = await self._c._post(self._p + "/previews", {"port": port, "visibility": visibility})
        return from_dict(Preview, d)

    async def list(self) -> List[Preview]:
        return [from_dict(Preview, p) for p in await self._c._get(self._p + "/previews") or []]

    async def get(self, preview_id: str) -> Preview:
        return from_dict(Preview, await self._c._get(self._p + "/previews/%s" % preview_id))

    async def delete(self, preview_id: str) -> Preview:
        return from_dict(Preview, await self._c._delete(self._p + "/previews/%s" % preview_id))

    async def share(self, preview_id: str, ttl_seconds: int = 3600) -> PreviewShare:
        resp = await self._c.request(
            "POST", self._p + "/previews/%s/share" % preview_id, json={"ttl_seconds": ttl_seconds}
        )
        return PreviewShare.from_response(resp.json())


class AsyncEnv(_Part):
    async def list(self) -> List[EnvVar]:
        d = await self._c._get(self._p + "/env") or {}
        return [from_dict(EnvVar, v) for v in d.get("vars", [])]


class AsyncNetwork(_Part):
    """The sandbox's egress policy, applied to its running VM at once."""

    async def policy(self) -> NetworkPolicy:
        return from_dict(NetworkPolicy, await self._c._get(self._p + "/network-policy"))

    async def set_policy(
        self, default_effect: str, rules: Optional[Sequence[Mapping[str, Any]]] = None
    ) -> NetworkPolicy:
        body = b.policy_body(default_effect, rules)
        return from_dict(NetworkPolicy, await self._c._put(self._p + "/network-policy", body))

    async def clear_policy(self) -> NetworkPolicy:
        """Back to everything the host's fixed rules leave (the internet)."""
        return from_dict(NetworkPolicy, await self._c._delete(self._p + "/network-policy"))


class AsyncEvents(_Part):
    def stream(self, types: Optional[str] = None, after: Optional[int] = None) -> AsyncIterator[Event]:
        """The sandbox's events (replayed from ``after``, then live); runs
        until the caller stops iterating. Resumes after a broken connection
        from the last event seen."""
        return self._c.sse(
            "GET", self._p + "/events", params={"types": types, "after": after}, resume=True
        )

    async def list(self, after: Optional[int] = None) -> List[Event]:
        items = await self._c._get(self._p + "/events", params={"after": after}) or []
        return [Event(event=e.get("type", "message"), data=e, id=str(e.get("seq"))) for e in items]


class AsyncFileWatch(OpensOnAwait):
    """A watch of a guest path (``sbx.files.watch``): iterate it for
    :class:`FileEvent`s; ``aclose()`` (or leaving its ``with`` block) ends
    it. An ``error`` frame from the server (the watch failed) is raised."""

    def __init__(self, client: AsyncHearth, path: str, params: Mapping[str, Any]) -> None:
        self._c = client
        self._path = path
        self._params = dict(params)
        self._stack = contextlib.AsyncExitStack()
        self._events: Any = None
        self._closed = False

    async def open(self) -> "AsyncFileWatch":
        """Starts the watch (iterating starts it too); a watch already open
        is left as it is."""
        if self._events is None:
            if self._closed:
                raise HearthError("the watch is closed")
            try:
                resp = await self._stack.enter_async_context(
                    self._c.stream(
                        "GET", self._path, params=self._params, headers={"Accept": "text/event-stream"}
                    )
                )
            except BaseException:
                await self._stack.aclose()
                raise
            self._events = self._iter(resp)
        return self

    async def _iter(self, resp: httpx.Response) -> AsyncIterator[FileEvent]:
        # The SSE frames decoded inline (not through a nested generator), so
        # closing this generator closes the response at once.
        dec = SSEDecoder()
        try:
            try:
                async for chunk in resp.aiter_bytes():
                    for ev in dec.feed(chunk):
                        yield b.file_event(ev)
            except httpx.TransportError as e:
                raise HearthConnectionError("GET %s: %s" % (self._path, e or type(e).__name__)) from e
            for ev in dec.flush():
                yield b.file_event(ev)
        finally:
            await self._stack.aclose()

    async def __aenter__(self) -> "AsyncFileWatch":
        return await self.open()

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __aiter__(self) -> "AsyncFileWatch":
        return self

    async def __anext__(self) -> FileEvent:
        await self.open()
        return await self._events.__anext__()

    async def aclose(self) -> None:
        self._closed = True
        if self._events is not None:
            await self._events.aclose()
        await self._stack.aclose()

    close = aclose


class AsyncTerminals(_Part):
    """``sbx.terminal``: PTY shells in the sandbox, driven over a WebSocket."""

    def create(
        self,
        cols: int = 80,
        rows: int = 24,
        *,
        shell: Optional[str] = None,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        user: Optional[str] = None,
        connect: bool = True,
    ) -> CreateCall["AsyncTerminal"]:
        """Opens a terminal and (by default) connects to it:
        ``term = await sbx.terminal.create(...)``, or
        ``async with sbx.terminal.create(...) as term:`` to close it (and end
        its shell) on exit."""
        body = b.terminal_body(cols, rows, shell, cwd, env, user)

        async def run() -> AsyncTerminal:
            info = from_dict(TerminalInfo, await self._c._post(self._p + "/terminals", body))
            term = AsyncTerminal(self._c, self._s.id, info)
            if connect:
                try:
                    await term.connect()
                except BaseException:
                    with contextlib.suppress(HearthError):
                        await term.kill()
                    raise
            return term

        return create_call(run())

    async def connect(self, terminal_id: str) -> "AsyncTerminal":
        """Attaches to a terminal opened earlier (its shell kept running
        when the previous client detached)."""
        return await AsyncTerminal(self._c, self._s.id, TerminalInfo(id=terminal_id)).connect()

    async def delete(self, terminal_id: str) -> Dict[str, Any]:
        """Closes a terminal: its shell ends."""
        return await self._c._delete(self._p + "/terminals/%s" % terminal_id)


class AsyncTerminal:
    """A terminal's WebSocket: :meth:`send` types, :meth:`recv` (or
    iterating) returns output bytes as the PTY writes them, :meth:`resize`
    changes the size, :meth:`close` ends the shell (:meth:`detach` only
    disconnects)."""

    def __init__(self, client: AsyncHearth, sandbox_id: str, info: TerminalInfo) -> None:
        self._c = client
        self.id = info.id
        self.sandbox_id = sandbox_id
        self.info = info
        self.cols = info.cols
        self.rows = info.rows
        self._ws: Any = None
        self._buf = b""
        self._eof = False
        self._killed = False
        #: The shell's exit code once the terminal closed because it exited.
        self.exit_code: Optional[int] = None

    def __repr__(self) -> str:
        return "AsyncTerminal(id=%r, sandbox_id=%r)" % (self.id, self.sandbox_id)

    @property
    def ws_url(self) -> str:
        return b.terminal_ws_url(self._c.base_url, self.sandbox_id, self.id)

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._eof

    async def connect(self, open_timeout: float = 10.0) -> "AsyncTerminal":
        url = self.ws_url
        headers, ua = b.ws_headers(self._c._headers)
        try:
            self._ws = await ws_connect(url, headers, ua, open_timeout)
        except Exception as e:
            raise b.ws_connect_error(e, url) from e
        self._eof = False
        return self

    def _socket(self) -> Any:
        if self._ws is None:
            raise HearthError("terminal %s is not connected" % self.id)
        return self._ws

    async def send(self, data: Union[bytes, str]) -> None:
        """Types ``data`` (text is sent as UTF-8) into the terminal."""
        from websockets.exceptions import ConnectionClosed

        raw = b.to_bytes(data)
        if raw is None:
            raise TypeError("send() takes bytes or str, not %s" % type(data).__name__)
        try:
            await self._socket().send(raw)
        except ConnectionClosed as e:
            raise HearthConnectionError("terminal %s: connection closed (%s)" % (self.id, e)) from e

    async def resize(self, cols: int, rows: int) -> None:
        """Sets the terminal size (1-1000 each); the shell gets SIGWINCH.
        A size the server refuses is raised by a later :meth:`recv`."""
        from websockets.exceptions import ConnectionClosed

        msg = b.resize_message(cols, rows)
        try:
            await self._socket().send(msg)
        except ConnectionClosed as e:
            raise HearthConnectionError("terminal %s: connection closed (%s)" % (self.id, e)) from e
        self.cols, self.rows = cols, rows

    async def recv(self, timeout: Optional[float] = None) -> bytes:
        """The next output bytes; ``b""`` once the terminal has closed (its
        shell exited). Raises :class:`HearthTimeoutError` when nothing
        arrives within ``timeout`` seconds, and the server's error notices
        (a refused resize) as errors."""
        from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

        if self._buf:
            out, self._buf = self._buf, b""
            return out
        if self._eof:
            return b""
        ws = self._socket()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                msg = await ws_recv(ws, left)
            except TimeoutError as e:
                raise HearthTimeoutError("no terminal output within %ss" % timeout) from e
            except ConnectionClosedOK as e:
                self._eof = True
                self.exit_code = b.close_exit_code(e.rcvd.reason if e.rcvd else None)
                return b""
            except ConnectionClosed as e:
                self._eof = True
                raise HearthConnectionError("terminal %s: connection lost (%s)" % (self.id, e)) from e
            if isinstance(msg, str):
                notice = b.terminal_notice(msg)
                if notice is not None:
                    raise notice
                msg = msg.encode("utf-8")
            if msg:
                return msg

    def __aiter__(self) -> "AsyncTerminal":
        return self

    async def __anext__(self) -> bytes:
        chunk = await self.recv()
        if not chunk:
            raise StopAsyncIteration
        return chunk

    async def read_until(self, marker: Any, timeout: float = 30.0) -> bytes:
        """Reads output until ``marker`` (bytes, text or a compiled bytes
        regex) appears; returns everything up to the end of the match (the
        rest stays for the next read). Raises :class:`HearthTimeoutError`
        after ``timeout`` seconds, or :class:`HearthError` if the terminal
        closes first; both quote the output seen."""
        buf = b""
        deadline = time.monotonic() + timeout
        while True:
            end = b.find_marker(buf, marker)
            if end >= 0:
                buf, self._buf = buf[:end], buf[end:] + self._buf
                return buf
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise HearthTimeoutError("timed out")
                chunk = await self.recv(timeout=left)
            except HearthTimeoutError:
                self._buf = buf + self._buf
                raise HearthTimeoutError(
                    "%r not seen within %ss; output: %r" % (marker, timeout, buf[-500:])
                ) from None
            if not chunk:
                self._buf = buf
                raise HearthError("terminal closed before %r; output: %r" % (marker, buf[-500:]))
            buf += chunk

    async def detach(self) -> None:
        """Disconnects; the shell keeps running (``sbx.terminal.connect(id)``
        attaches again)."""
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    async def kill(self) -> None:
        """Ends the terminal's shell on the server (``DELETE``); a terminal
        already gone is not an error."""
        if self._killed:
            return
        try:
            await self._c._delete("/sandboxes/%s/terminals/%s" % (self.sandbox_id, self.id))
        except NotFoundError:
            pass
        self._killed = True

    async def close(self) -> None:
        """Disconnects and ends the shell."""
        await self.detach()
        await self.kill()

    aclose = close

    async def __aenter__(self) -> "AsyncTerminal":
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            await self.close()
        except HearthError:
            if exc_type is None:
                raise


def _build_id(build: Any) -> str:
    """A build id from an id, a :class:`TemplateBuild` or a :class:`Template`
    (its newest build)."""
    if isinstance(build, str):
        return build
    if isinstance(build, Template):
        if build.build is not None:
            return build.build.id
        if build.latest_build_id:
            return build.latest_build_id
        raise HearthError("template %s has no build" % build.id)
    return build.id


class AsyncTemplates:
    """``client.templates``: built-in templates and templates built from a
    :class:`BuildSpec` (or a dict of the same fields)."""

    def __init__(self, client: AsyncHearth) -> None:
        self._c = client
        self.builds = AsyncTemplateBuilds(client)

    async def list(self) -> List[Template]:
        return [Template.from_dict(t) for t in await self._c._get("/sandbox-templates") or []]

    async def get(self, id_or_name: str) -> Template:
        return Template.from_dict(await self._c._get("/sandbox-templates/%s" % id_or_name))

    async def create(
        self,
        name: str,
        build_spec: Union[BuildSpec, Mapping[str, Any]],
        *,
        idempotency_key: Optional[str] = None,
    ) -> Template:
        """Creates template ``name`` and queues its first build
        (``template.build``); :meth:`wait` for it before creating sandboxes
        from it (``template_id=template.id`` or its name)."""
        body = {"name": name, "build_spec": spec_dict(build_spec)}
        key = idempotency_key or b.new_idempotency_key()
        d = await self._c._post("/sandbox-templates", body, headers={"Idempotency-Key": key})
        return Template.from_dict(d)

    async def validate(
        self, build_spec: Union[BuildSpec, Mapping[str, Any]], name: Optional[str] = None
    ) -> TemplateValidation:
        """Checks a spec (and a name) without building: ``valid``,
        ``errors`` and the spec with defaults filled in."""
        body = b.clean({"name": name, "build_spec": spec_dict(build_spec)})
        return from_dict(TemplateValidation, await self._c._post("/sandbox-templates/validate", body))

    async def rebuild(
        self,
        id_or_name: str,
        build_spec: Union[BuildSpec, Mapping[str, Any], None] = None,
        *,
        idempotency_key: Optional[str] = None,
    ) -> TemplateBuild:
        """Queues the template's next version, from ``build_spec`` or else
        the spec of its newest build."""
        body = b.clean({"build_spec": spec_dict(build_spec)})
        key = idempotency_key or b.new_idempotency_key()
        d = await self._c._post(
            "/sandbox-templates/%s/builds" % id_or_name, body, headers={"Idempotency-Key": key}
        )
        return from_dict(TemplateBuild, d)

    async def wait(
        self, build: Any, timeout: Optional[float] = 600.0,
        poll_interval: float = b.BUILD_POLL_INTERVAL,
    ) -> TemplateBuild:
        """Same as ``templates.builds.wait``."""
        return await self.builds.wait(build, timeout=timeout, poll_interval=poll_interval)


class AsyncTemplateBuilds:
    """``client.templates.builds``: build status and logs."""

    def __init__(self, client: AsyncHearth) -> None:
        self._c = client

    async def get(self, build_id: str) -> TemplateBuild:
        return from_dict(TemplateBuild, await self._c._get("/sandbox-template-builds/%s" % build_id))

    async def logs(self, build_id: str) -> AsyncIterator[Event]:
        """The build log: ``log`` events (``.text``, ``.get("stream")``) as
        the build writes them, then one ``done`` event with the final
        ``state`` and ``error``. Resumes after a broken connection."""
        events = self._c.sse("GET", "/sandbox-template-builds/%s/logs/stream" % build_id, resume=True)
        try:
            async for ev in events:
                yield ev
                if ev.event == "done":
                    return
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    async def log_lines(self, build_id: str, timeout: float = 30.0) -> List[str]:
        """The text of every line of a finished build's log."""
        lines: List[str] = []
        t = httpx.Timeout(timeout, connect=self._c.timeout.connect)
        events = self._c.sse(
            "GET", "/sandbox-template-builds/%s/logs/stream" % build_id, resume=True, timeout=t
        )
        try:
            async for ev in events:
                if ev.event == "done":
                    break
                if ev.event == "log" and ev.text is not None:
                    lines.append(ev.text)
        finally:
            await events.aclose()  # type: ignore[attr-defined]
        return lines

    async def wait(
        self, build: Any, timeout: Optional[float] = 600.0,
        poll_interval: float = b.BUILD_POLL_INTERVAL,
    ) -> TemplateBuild:
        """Waits until the build (an id, a :class:`TemplateBuild`, or a
        :class:`Template` for its newest build) is ``ready`` and returns it.
        Raises :class:`TemplateBuildError` (with the log tail) when it
        fails, :class:`HearthTimeoutError` after ``timeout`` seconds."""
        build_id = _build_id(build)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            cur = await self.get(build_id)
            if cur.state == "ready":
                return cur
            if cur.state == "failed":
                try:
                    lines = await self.log_lines(build_id)
                except HearthError:
                    lines = []
                raise b.build_failure(cur, lines)
            if deadline is not None and time.monotonic() >= deadline:
                raise HearthTimeoutError(
                    "template build %s still %s after %ss" % (build_id, cur.state, timeout)
                )
            delay = poll_interval
            if deadline is not None:
                delay = max(0.0, min(delay, deadline - time.monotonic()))
            await self._c._sleep(delay)


class AsyncApiKeys:
    """``client.api_keys``: the tenant's API keys."""

    def __init__(self, client: AsyncHearth) -> None:
        self._c = client

    async def list(self) -> List[ApiKey]:
        return [from_dict(ApiKey, k) for k in await self._c._get("/api-keys") or []]

    async def create(
        self, name: Optional[str] = None, *, tenant_id: Optional[str] = None,
        idempotency_key: Optional[str] = None,
    ) -> ApiKey:
        """A new key; its secret is in ``.key``, shown this once. Only an
        admin key may create one for another ``tenant_id``."""
        key = idempotency_key or b.new_idempotency_key()
        d = await self._c._post(
            "/api-keys", b.clean({"name": name, "tenant_id": tenant_id}), headers={"Idempotency-Key": key}
        )
        return from_dict(ApiKey, d)

    async def revoke(self, key_id: str) -> Dict[str, Any]:
        """Revokes a key (by its id, not its secret); a key cannot revoke itself."""
        return await self._c._delete("/api-keys/%s" % key_id)

    delete = revoke


class AsyncDeployments:
    """``client.deployments``: sandboxes published as services (publish
    with ``sandbox.deploy``, or :meth:`publish`); ``.domains`` holds their
    custom domains."""

    def __init__(self, client: AsyncHearth) -> None:
        self._c = client
        self.domains = AsyncDeploymentDomains(client)

    async def list(
        self,
        *,
        state: Optional[str] = None,
        external_workspace_id: Optional[str] = None,
        external_user_id: Optional[str] = None,
        external_project_id: Optional[str] = None,
    ) -> List[Deployment]:
        """The tenant's deployments, newest first, filtered by the
        arguments given."""
        params = b.clean({"state": state, "external_workspace_id": external_workspace_id,
                          "external_user_id": external_user_id,
                          "external_project_id": external_project_id})
        return [from_dict(Deployment, d) for d in await self._c._get("/deployments", params=params) or []]

    async def get(self, deployment_id: str) -> Deployment:
        return from_dict(Deployment, await self._c._get("/deployments/%s" % deployment_id))

    async def publish(
        self,
        deployment_id: str,
        sandbox_id: str,
        port: int,
        start_command: str,
        *,
        health_check_path: str = "/",
        health_timeout_sec: Optional[int] = None,
        promote: bool = True,
        build_command: Optional[str] = None,
        output_path: Optional[str] = None,
        replicas: Optional[int] = None,
        custom_domain: Optional[str] = None,
        external_workspace_id: Optional[str] = None,
        external_user_id: Optional[str] = None,
        external_project_id: Optional[str] = None,
        wait: bool = True,
    ) -> DeployResult:
        """Publishes sandbox ``sandbox_id`` as a new version of this
        deployment (as ``sandbox.deploy(..., deployment_id=)``, which
        describes the arguments). Only the arguments given are sent."""
        body = b.clean({"source_sandbox_id": sandbox_id, "port": port,
                        "start_command": start_command, "health_check_path": health_check_path,
                        "health_timeout_sec": health_timeout_sec, "promote": promote,
                        "build_command": build_command, "output_path": output_path,
                        "replicas": replicas, "custom_domain": custom_domain,
                        "external_workspace_id": external_workspace_id,
                        "external_user_id": external_user_id,
                        "external_project_id": external_project_id,
                        "wait": None if wait else False})
        patience = b.deploy_wait(health_timeout_sec, build_command) if wait else 0.0
        d = await self._c._post("/deployments/%s/publish" % deployment_id, body,
                                timeout=b.exec_timeout(self._c.timeout, patience))
        return DeployResult.of(d)

    async def update(
        self,
        deployment_id: str,
        *,
        name: Optional[str] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        replicas: Optional[int] = None,
    ) -> Deployment:
        """Renames the deployment, replaces its metadata, or scales it to
        ``replicas`` instances (1-20: new ones pass their health check
        before they serve, extra ones drain). Only the arguments given are
        sent."""
        body = b.clean({"name": name, "metadata": dict(metadata) if metadata is not None else None,
                        "replicas": replicas})
        t = b.exec_timeout(self._c.timeout, 210.0) if replicas is not None else None
        resp = await self._c.request("PATCH", "/deployments/%s" % deployment_id, json=body, timeout=t)
        return from_dict(Deployment, b.unwrap(resp))

    async def scale(self, deployment_id: str, replicas: int) -> Deployment:
        """Runs ``replicas`` instances (``update(deployment_id, replicas=)``)."""
        return await self.update(deployment_id, replicas=replicas)

    async def get_env(self, deployment_id: str) -> Dict[str, str]:
        """The environment the start command gets."""
        d = await self._c._get("/deployments/%s/env" % deployment_id) or {}
        return dict(d.get("env") or {})

    async def set_env(self, deployment_id: str, env: Mapping[str, str]) -> Dict[str, str]:
        """Replaces the start command's environment (``{}`` clears it).
        Instances started from now on get it: a publish, a scale-up, or
        :meth:`redeploy` (every instance, without downtime)."""
        d = await self._c._put("/deployments/%s/env" % deployment_id, {"env": dict(env)}) or {}
        return dict(d.get("env") or {})

    async def versions(self, deployment_id: str) -> List[DeploymentVersion]:
        items = await self._c._get("/deployments/%s/versions" % deployment_id) or []
        return [from_dict(DeploymentVersion, v) for v in items]

    async def version(self, deployment_id: str, version_id: str) -> DeploymentVersion:
        """One version (``state`` ``building`` while a publish with
        ``wait=False`` goes on)."""
        v = await self._c._get("/deployments/%s/versions/%s" % (deployment_id, version_id))
        return from_dict(DeploymentVersion, v)

    async def rollback(self, deployment_id: str, version_id: Optional[str] = None) -> DeployResult:
        """Serves ``version_id`` (default: the version before the active one)
        again, once its new instance is healthy."""
        d = await self._c._post("/deployments/%s/rollback" % deployment_id,
                                b.clean({"version_id": version_id}),
                                timeout=b.exec_timeout(self._c.timeout, 210.0))
        return DeployResult.of(d)

    async def stop(self, deployment_id: str) -> Deployment:
        return from_dict(Deployment, await self._c._post("/deployments/%s/stop" % deployment_id))

    async def redeploy(self, deployment_id: str) -> DeployResult:
        """Fresh instances of the active version (with the current env),
        healthy before they serve."""
        d = await self._c._post("/deployments/%s/redeploy" % deployment_id,
                                timeout=b.exec_timeout(self._c.timeout, 210.0))
        return DeployResult.of(d)

    async def logs(self, deployment_id: str, lines: int = 200) -> Dict[str, str]:
        """The start command's last ``lines`` lines: ``{stdout, stderr}``."""
        return await self._c._get("/deployments/%s/logs" % deployment_id, params={"lines": lines})

    async def instance_logs(self, deployment_id: str, instance_id: str, lines: int = 200) -> Dict[str, str]:
        """One runtime instance's (see :meth:`instances`) start-command
        output, its last ``lines`` lines: ``{stdout, stderr}``."""
        return await self._c._get(
            "/deployments/%s/runtime-instances/%s/logs" % (deployment_id, instance_id),
            params={"lines": lines},
        )

    async def instances(self, deployment_id: str) -> List[Dict[str, Any]]:
        return await self._c._get("/deployments/%s/runtime-instances" % deployment_id) or []

    async def delete(self, deployment_id: str) -> Dict[str, Any]:
        return await self._c._delete("/deployments/%s" % deployment_id)


class AsyncDeploymentDomains:
    """``client.deployments.domains``: a deployment's custom domains,
    served once verified."""

    def __init__(self, client: AsyncHearth) -> None:
        self._c = client

    async def add(
        self, deployment_id: str, domain: str, *, certificate_pem: Optional[str] = None,
        private_key_pem: Optional[str] = None,
    ) -> CustomDomain:
        """Adds ``domain`` (``app.example.com``), ``pending``: create the
        TXT record ``verification["name"]`` holding ``verification["value"]``,
        then :meth:`verify`. A PEM ``certificate_pem`` chain and its
        ``private_key_pem`` (together) are served for it over TLS."""
        body = b.clean({"domain": domain, "certificate_pem": certificate_pem,
                        "private_key_pem": private_key_pem})
        return from_dict(CustomDomain, await self._c._post("/deployments/%s/domains" % deployment_id, body))

    async def list(self, deployment_id: str) -> List[CustomDomain]:
        items = await self._c._get("/deployments/%s/domains" % deployment_id) or []
        return [from_dict(CustomDomain, d) for d in items]

    async def verify(self, deployment_id: str, domain_id: str) -> CustomDomain:
        """Checks the domain's TXT record: the domain, ``verified`` and
        served; else :class:`ConflictError` with code ``domain_not_verified``
        (the record is missing or wrong) or ``domain_taken`` (another
        deployment holds the domain verified)."""
        d = await self._c._post("/deployments/%s/domains/%s/verify" % (deployment_id, domain_id))
        return from_dict(CustomDomain, d)

    async def delete(self, deployment_id: str, domain_id: str) -> CustomDomain:
        """Removes the domain (no longer served); the answer has ``deleted``."""
        d = await self._c._delete("/deployments/%s/domains/%s" % (deployment_id, domain_id))
        return from_dict(CustomDomain, d)


class AsyncSecrets:
    """``client.secrets``: the vault. A value goes in and never comes back:
    a secret bound to a sandbox is in the env of every command started
    there (``bind``); ``exec.run(..., secrets=["NAME"])`` adds one to a
    single call. Output that prints a value shows ``***``."""

    def __init__(self, client: AsyncHearth) -> None:
        self._c = client

    async def create(
        self, name: str, value: str, *, type: str = "api_key", scope: str = "user",
        expose_as_env: Optional[str] = None, sandbox_id: Optional[str] = None,
        expires_at: b.TimeLike = None, metadata: Optional[Mapping[str, Any]] = None,
    ) -> Secret:
        """Stores a secret; with ``sandbox_id`` and ``expose_as_env`` it is
        bound there too."""
        body = b.clean({
            "name": name, "value": value, "type": type, "scope": scope,
            "expose_as_env": expose_as_env, "resource_id": sandbox_id,
            "resource_type": "sandbox" if sandbox_id else None,
            "expires_at": b.time_param(expires_at), "metadata": dict(metadata) if metadata else None,
        })
        return from_dict(Secret, await self._c._post("/egress/secrets", body))

    async def list(self, *, sandbox_id: Optional[str] = None, type: Optional[str] = None) -> List[Secret]:
        params = b.clean({"resource_id": sandbox_id, "type": type})
        return [from_dict(Secret, s) for s in await self._c._get("/egress/secrets", params=params) or []]

    async def get(self, secret_id: str) -> Secret:
        return from_dict(Secret, await self._c._get("/egress/secrets/%s" % secret_id))

    async def rotate(self, secret_id: str, value: str) -> Secret:
        """A new value: the next command started gets it."""
        d = b.unwrap(await self._c.request("PATCH", "/egress/secrets/%s" % secret_id, json={"value": value}))
        return from_dict(Secret, d)

    async def delete(self, secret_id: str) -> Dict[str, Any]:
        """Deletes the secret and its bindings."""
        return await self._c._delete("/egress/secrets/%s" % secret_id)

    async def bind(self, secret_id: str, sandbox_id: str, expose_as_env: str) -> SecretBinding:
        body = {"secret_id": secret_id, "resource_id": sandbox_id, "resource_type": "sandbox",
                "expose_as_env": expose_as_env}
        return from_dict(SecretBinding, await self._c._post("/egress/bindings", body))

    async def bindings(self, *, sandbox_id: Optional[str] = None,
                       secret_id: Optional[str] = None) -> List[SecretBinding]:
        params = b.clean({"resource_id": sandbox_id, "secret_id": secret_id})
        return [from_dict(SecretBinding, x) for x in await self._c._get("/egress/bindings", params=params) or []]

    async def unbind(self, binding_id: str) -> Dict[str, Any]:
        """The next command started no longer gets the secret."""
        return await self._c._delete("/egress/bindings/%s" % binding_id)


class AsyncTokens:
    """``client.tokens``: scoped tokens, a key's delegates that can do less
    (``scopes``), for less long (at most a day), on fewer sandboxes."""

    def __init__(self, client: AsyncHearth) -> None:
        self._c = client

    async def create(
        self, user_id: str, workspace_id: str, *, expires_in_seconds: int = 3600,
        scopes: Optional[List[str]] = None, sandbox_ids: Optional[List[str]] = None,
    ) -> ScopedToken:
        """A new token; its secret is in ``.token``, shown this once. Pass it
        as ``api_key`` to another client."""
        body = b.clean({"user_id": user_id, "workspace_id": workspace_id,
                        "expires_in_seconds": expires_in_seconds, "scopes": scopes,
                        "sandbox_ids": sandbox_ids})
        return from_dict(ScopedToken, await self._c._post("/tokens/scoped", body))

    async def list(self) -> List[ScopedToken]:
        return [from_dict(ScopedToken, t) for t in await self._c._get("/tokens/scoped") or []]

    async def revoke(self, token_id: str) -> Dict[str, Any]:
        """The token is refused from its next request; its streams end."""
        return await self._c._delete("/tokens/scoped/%s" % token_id)


class AsyncAudit:
    """``client.audit``: the tenant's audit log, oldest first."""

    def __init__(self, client: AsyncHearth) -> None:
        self._c = client

    async def list(
        self, *, after: Optional[str] = None, limit: int = 100, type: Optional[str] = None,
        actor_id: Optional[str] = None, sandbox_id: Optional[str] = None,
    ) -> Tuple[List[AuditEntry], Optional[str]]:
        """One page and the cursor of the next (``None`` on the last)."""
        params = b.clean({"after": after, "limit": limit, "type": type, "actor_id": actor_id,
                          "resource_type": "sandbox" if sandbox_id else None,
                          "resource_id": sandbox_id})
        body = (await self._c.request("GET", "/audit-log", params=params)).json()
        return [from_dict(AuditEntry, e) for e in body.get("data") or []], body.get("next_cursor")

    async def iter(self, **filters: Any) -> AsyncIterator[AuditEntry]:
        """Every entry matching ``filters`` (as ``list``), page after page."""
        after = filters.pop("after", None)
        while True:
            page, after = await self.list(after=after, **filters)
            for e in page:
                yield e
            if after is None:
                return


class AsyncUsageResource:
    """``client.usage``: the tenant's metered usage."""

    def __init__(self, client: AsyncHearth) -> None:
        self._c = client

    async def get(
        self,
        period_start: b.TimeLike = None,
        period_end: b.TimeLike = None,
        group_by: Optional[str] = None,
    ) -> UsageReport:
        """Usage in ``[period_start, period_end)`` (default: all time until
        now), optionally grouped by ``sandbox_id``, ``template_id``,
        ``deployment_id``, ``external_workspace_id``, ``external_user_id``
        or ``external_project_id``."""
        params = {"period_start": b.time_param(period_start),
                  "period_end": b.time_param(period_end), "group_by": group_by}
        return UsageReport.from_dict(await self._c._get("/usage", params=params))


class AsyncTenantEvents:
    """``client.events``: events of every sandbox of the tenant (and of
    template builds)."""

    def __init__(self, client: AsyncHearth) -> None:
        self._c = client

    def stream(self, types: Optional[str] = None, after: Optional[int] = None) -> AsyncIterator[Event]:
        """Events replayed from ``after``, then live; ``types`` is a
        comma-separated list of globs (``sandbox.*``). Resumes after a
        broken connection from the last event seen."""
        return self._c.sse("GET", "/events/stream", params={"types": types, "after": after}, resume=True)

    async def list(self, types: Optional[str] = None, after: Optional[int] = None) -> List[Event]:
        items = await self._c._get("/events", params={"types": types, "after": after}) or []
        return [Event(event=e.get("type", "message"), data=e, id=str(e.get("seq"))) for e in items]
