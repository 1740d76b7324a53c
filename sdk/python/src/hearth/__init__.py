"""Python SDK for Hearth, a self-hosted microVM sandbox platform.

    from hearth import Hearth

    client = Hearth()  # HEARTH_API_KEY, HEARTH_BASE_URL
    with client.sandboxes.create(template_id="minimal") as sbx:
        print(sbx.exec.run("echo hi").stdout)
"""

from ._async import AsyncFileWatch, AsyncHearth, AsyncSandbox, AsyncTerminal
from ._base import __version__
from ._errors import (
    AuthenticationError,
    ConflictError,
    HearthConnectionError,
    HearthError,
    HearthTimeoutError,
    NotFoundError,
    RateLimitError,
    ServerError,
    TemplateBuildError,
    ValidationError,
)
from ._models import (
    ApiKey,
    AuditEntry,
    BuildSpec,
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
)
from ._sse import SSEDecoder
from ._sync import FileWatch, Hearth, Sandbox, Terminal

__all__ = [
    "Hearth",
    "AsyncHearth",
    "Sandbox",
    "AsyncSandbox",
    "SandboxInfo",
    "ExecResult",
    "Event",
    "FileEntry",
    "WriteResult",
    "Process",
    "ProcessLogs",
    "Snapshot",
    "NetworkPolicy",
    "Preview",
    "PreviewShare",
    "EnvVar",
    "FileEvent",
    "FileTree",
    "FileWatch",
    "AsyncFileWatch",
    "Terminal",
    "AsyncTerminal",
    "TerminalInfo",
    "BuildSpec",
    "Template",
    "TemplateBuild",
    "TemplateValidation",
    "ApiKey",
    "Secret",
    "SecretBinding",
    "ScopedToken",
    "AuditEntry",
    "Usage",
    "UsageReport",
    "SSEDecoder",
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
    "__version__",
]
