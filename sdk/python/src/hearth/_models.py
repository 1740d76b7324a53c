"""Typed views of the server's JSON objects. Every model keeps the whole
object it was built from in ``raw``, so fields the SDK does not name yet
are still reachable."""

from __future__ import annotations

import base64
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Type, TypeVar, Union

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

    @property
    def data(self) -> Dict[str, Any]:
        """The sandbox's object as the server last sent it, as the MIOSA
        SDK's ``sbx.data``: ``sbx.data["metadata"]["last_error"]`` says why
        a sandbox is in state ``error``."""
        return self.raw

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
        """The raw output chunk of a ``stdout``/``stderr`` exec event, or the
        line of a template build ``log`` event."""
        d = self.get("data")
        return d if d is not None else self.get("text")

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
class NetworkPolicy:
    """A sandbox's egress policy. Rules are dicts of ``effect``
    (``allow``/``deny``), ``destination`` (CIDR, address or hostname),
    optional ``ports`` (``"443"``, ``"8000-8100"``) and ``protocol``
    (``tcp``/``udp``/``any``), evaluated top to bottom; the host, other
    sandboxes and private ranges stay unreachable whatever they say."""

    sandbox_id: str = ""
    default_effect: str = "allow"
    rules: List[Dict[str, Any]] = field(default_factory=list)
    updated_at: Optional[str] = None
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


@dataclass
class FileEvent:
    """One change seen by ``sbx.files.watch``: ``event`` is ``created``,
    ``modified``, ``deleted`` or ``renamed`` (then ``old_path`` is set)."""

    event: str = ""
    path: str = ""
    is_dir: bool = False
    old_path: Optional[str] = None
    id: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_event(cls, ev: Event) -> "FileEvent":
        d = ev.data if isinstance(ev.data, dict) else {}
        return from_dict(cls, dict(d, event=d.get("event") or ev.event), id=ev.id)


@dataclass
class FileTree:
    """A node of ``sbx.files.tree``; ``truncated`` marks a directory past
    the depth limit (its ``children`` were not read)."""

    path: str = ""
    name: str = ""
    type: Optional[str] = None
    is_dir: bool = False
    size: Optional[int] = None
    truncated: bool = False
    children: List["FileTree"] = field(default_factory=list)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]]) -> "FileTree":
        d = dict(d or {})
        kids = [cls.from_dict(c) for c in d.get("children") or [] if isinstance(c, dict)]
        node = from_dict(cls, {k: v for k, v in d.items() if k != "children"})
        node.children = kids
        node.raw = d
        return node

    def walk(self):
        """This node, then every node below it, depth first."""
        yield self
        for c in self.children:
            yield from c.walk()


@dataclass
class TerminalInfo:
    """The answer of ``POST /sandboxes/{id}/terminals``."""

    id: str = ""
    ws_url: Optional[str] = None
    pid: Optional[int] = None
    cols: Optional[int] = None
    rows: Optional[int] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class BuildSpec:
    """What a template is built from (API.md, Templates). Only the fields
    set are sent; ``from_`` is the wire field ``from`` (``minimal``,
    ``debian`` or another template). :meth:`run` and :meth:`copy` append
    steps and return the spec, so they chain."""

    from_: Optional[str] = None
    packages: Optional[List[str]] = None
    steps: List[Dict[str, Any]] = field(default_factory=list)
    env: Optional[Dict[str, str]] = None
    workdir: Optional[str] = None
    user: Optional[str] = None
    start_cmd: Optional[str] = None
    ready_cmd: Optional[str] = None
    ready_timeout_sec: Optional[int] = None
    cpu_count: Optional[int] = None
    memory_mb: Optional[int] = None
    disk_size_mb: Optional[int] = None

    def run(self, cmd: str) -> "BuildSpec":
        self.steps.append({"run": cmd})
        return self

    def copy(self, path: str, data: Union[bytes, str], mode: Optional[int] = None) -> "BuildSpec":
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        step: Dict[str, Any] = {"path": path, "content_base64": base64.b64encode(raw).decode("ascii")}
        if mode is not None:
            step["mode"] = mode
        self.steps.append({"copy": step})
        return self

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None or (f.name == "steps" and not v):
                continue
            out["from" if f.name == "from_" else f.name] = v
        return out


def spec_dict(spec: Union[BuildSpec, Dict[str, Any], None]) -> Optional[Dict[str, Any]]:
    """A build spec as the wire form (a ``BuildSpec`` or a plain dict)."""
    if spec is None:
        return None
    if isinstance(spec, BuildSpec):
        return spec.to_dict()
    return dict(spec)


BUILD_DONE_STATES = frozenset({"ready", "failed"})


@dataclass
class TemplateBuild:
    """One build (version) of a custom template; ``state`` is ``queued``,
    ``building``, ``snapshotting``, ``ready`` or ``failed``."""

    id: str = ""
    template_id: Optional[str] = None
    version: Optional[int] = None
    state: Optional[str] = None
    error: Optional[str] = None
    build_spec: Optional[Dict[str, Any]] = None
    created_at: Optional[str] = None
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    duration_ms: Optional[int] = None
    logs_url: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def done(self) -> bool:
        return self.state in BUILD_DONE_STATES

    @property
    def ok(self) -> bool:
        return self.state == "ready"


@dataclass
class Template:
    """A template: built in (``built_in``, ``description``, ``aliases``) or
    built from a BuildSpec (``version`` of the newest ready build,
    ``state`` and ``latest_build_id`` of the newest build). After
    ``templates.create`` ``build`` holds the queued first build."""

    id: str = ""
    name: Optional[str] = None
    built_in: bool = False
    description: Optional[str] = None
    aliases: List[str] = field(default_factory=list)
    warm_shapes: List[str] = field(default_factory=list)
    version: Optional[str] = None
    state: Optional[str] = None
    latest_build_id: Optional[str] = None
    cpu_count: Optional[int] = None
    memory_mb: Optional[int] = None
    disk_size_mb: Optional[int] = None
    build_spec: Optional[Dict[str, Any]] = None
    versions: List[Dict[str, Any]] = field(default_factory=list)
    created_at: Optional[str] = None
    build: Optional[TemplateBuild] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]]) -> "Template":
        d = dict(d or {})
        build = d.get("build")
        t = from_dict(cls, {k: v for k, v in d.items() if k != "build"})
        t.raw = d
        if isinstance(build, dict):
            t.build = from_dict(TemplateBuild, build)
        return t


@dataclass
class TemplateValidation:
    """The answer of ``templates.validate``: ``errors`` lists
    ``{field, message}``; ``build_spec`` is the spec with defaults filled in
    (when valid)."""

    valid: bool = False
    errors: List[Dict[str, Any]] = field(default_factory=list)
    build_spec: Optional[Dict[str, Any]] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class ApiKey:
    """An API key; ``key`` (the secret) is set only in the answer of
    ``api_keys.create``, the one time the server shows it."""

    id: str = ""
    name: Optional[str] = None
    prefix: Optional[str] = None
    tenant_id: Optional[str] = None
    admin: bool = False
    created_at: Optional[str] = None
    key: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class Deployment:
    """A sandbox published as a service at ``public_url``: ``replicas``
    instances (``instance_ids``, those serving) of its active version run
    ``run_command``; ``custom_domain_id`` is its first verified custom
    domain. Fields a server before replicas does not send keep their
    defaults."""

    id: str = ""
    name: str = ""
    slug: Optional[str] = None
    state: Optional[str] = None
    active_version_id: Optional[str] = None
    public_url: Optional[str] = None
    tenant_id: Optional[str] = None
    replicas: Optional[int] = None
    instance_ids: List[str] = field(default_factory=list)
    custom_domain_id: Optional[str] = None
    run_command: Optional[str] = None
    external_workspace_id: Optional[str] = None
    external_user_id: Optional[str] = None
    external_project_id: Optional[str] = None
    metadata: Dict[str, Any] = field(default_factory=dict)
    created_at: Optional[str] = None
    updated_at: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class DeploymentVersion:
    """One immutable version of a deployment (a snapshot of its source).
    ``build_log`` is the output of its ``build_command`` (run once at
    publish, in ``output_path`` when set)."""

    id: str = ""
    deployment_id: str = ""
    version_number: int = 0
    kind: Optional[str] = None
    state: Optional[str] = None
    source_sandbox_id: Optional[str] = None
    runtime_command: Optional[str] = None
    runtime_port: Optional[int] = None
    health_check_path: Optional[str] = None
    build_command: Optional[str] = None
    build_log: Optional[str] = None
    output_path: Optional[str] = None
    error: Optional[str] = None
    promoted_at: Optional[str] = None
    created_at: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class CustomDomain:
    """A deployment's custom domain: ``pending`` until the TXT record
    ``verification["name"]`` (``_hearth-challenge.<domain>``) holds
    ``verification["value"]`` and ``deployments.domains.verify`` saw it,
    then ``verified`` and served (over TLS with its own certificate when
    ``has_certificate``). ``deleted`` is set in the answer of a delete."""

    id: str = ""
    deployment_id: str = ""
    domain: str = ""
    state: Optional[str] = None
    verification: Dict[str, Any] = field(default_factory=dict)
    has_certificate: bool = False
    created_at: Optional[str] = None
    verified_at: Optional[str] = None
    deleted: bool = False
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def verified(self) -> bool:
        return self.state == "verified"


@dataclass
class DeployResult:
    """What a publish or rollback did: ``promoted`` says whether the URL
    serves ``version`` now (else ``version.error`` says why not);
    ``custom_domain`` is the domain a publish's ``custom_domain`` added."""

    deployment: Deployment = field(default_factory=Deployment)
    version: DeploymentVersion = field(default_factory=DeploymentVersion)
    promoted: bool = False
    custom_domain: Optional[CustomDomain] = None

    @classmethod
    def of(cls, d: Dict[str, Any]) -> "DeployResult":
        domain = d.get("custom_domain")
        return cls(deployment=from_dict(Deployment, d.get("deployment") or {}),
                   version=from_dict(DeploymentVersion, d.get("version") or {}),
                   promoted=bool(d.get("promoted")),
                   custom_domain=from_dict(CustomDomain, domain) if isinstance(domain, dict) else None)


@dataclass
class Secret:
    """A secret of the vault. Its value is never answered: ``value_prefix``
    and ``last4`` tell secrets apart."""

    id: str = ""
    name: str = ""
    type: Optional[str] = None
    scope: Optional[str] = None
    value_prefix: Optional[str] = None
    last4: Optional[str] = None
    expose_as_env: Optional[str] = None
    resource_id: Optional[str] = None
    resource_type: Optional[str] = None
    metadata: Dict[str, Any] = field(default_factory=dict)
    created_at: Optional[str] = None
    rotated_at: Optional[str] = None
    expires_at: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class SecretBinding:
    """A secret bound to a sandbox as the env variable ``expose_as_env``."""

    id: str = ""
    secret_id: str = ""
    resource_id: str = ""
    resource_type: str = "sandbox"
    expose_as_env: str = ""
    created_at: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class ScopedToken:
    """A scoped token; ``token`` (the secret) is set only in the answer of
    ``tokens.create``, the one time the server shows it."""

    id: str = ""
    token: Optional[str] = None
    prefix: Optional[str] = None
    user_id: Optional[str] = None
    workspace_id: Optional[str] = None
    scopes: List[str] = field(default_factory=list)
    sandbox_ids: Optional[List[str]] = None
    created_at: Optional[str] = None
    expires_at: Optional[str] = None
    expired: bool = False
    revoked: bool = False
    revoked_at: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class AuditEntry:
    """One entry of the audit log."""

    id: str = ""
    cursor: Optional[str] = None
    type: str = ""
    actor_type: Optional[str] = None
    actor_id: Optional[str] = None
    tenant_id: Optional[str] = None
    resource_type: Optional[str] = None
    resource_id: Optional[str] = None
    request_id: Optional[str] = None
    ip: Optional[str] = None
    at: Optional[str] = None
    outcome: Optional[str] = None
    error_code: Optional[str] = None
    details: Dict[str, Any] = field(default_factory=dict)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class Usage:
    """Metered usage of one sandbox or one group (``key`` names the group
    when ``group_by`` was given)."""

    runtime_sec: Optional[float] = None
    provisioned_vcpu_ms: Optional[int] = None
    provisioned_memory_mb_ms: Optional[int] = None
    paused_disk_mb_ms: Optional[int] = None
    estimated_cost_cents: Optional[float] = None
    sandbox_id: Optional[str] = None
    state: Optional[str] = None
    key: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class UsageReport:
    """The answer of ``client.usage.get``: one ``Usage`` per group (a
    single one, or none when nothing ran, without ``group_by``)."""

    period_start: Optional[str] = None
    period_end: Optional[str] = None
    group_by: Optional[str] = None
    groups: List[Usage] = field(default_factory=list)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]]) -> "UsageReport":
        d = dict(d or {})
        r = from_dict(cls, {k: v for k, v in d.items() if k != "groups"})
        r.groups = [from_dict(Usage, g) for g in d.get("groups") or [] if isinstance(g, dict)]
        r.raw = d
        return r
