"""Python SDK for Hearth, a self-hosted microVM sandbox platform.

    from hearth import Hearth

    client = Hearth()  # HEARTH_API_KEY, HEARTH_BASE_URL
    with client.sandboxes.create(template_id="minimal") as sbx:
        print(sbx.exec.run("echo hi").stdout)
"""

from ._async import AsyncHearth, AsyncSandbox
from ._base import __version__
from ._errors import (
    AuthenticationError,
    ConflictError,
    HearthConnectionError,
    HearthError,
    NotFoundError,
    RateLimitError,
    ServerError,
    ValidationError,
)
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
)
from ._sse import SSEDecoder
from ._sync import Hearth, Sandbox

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
    "Preview",
    "PreviewShare",
    "EnvVar",
    "SSEDecoder",
    "HearthError",
    "AuthenticationError",
    "NotFoundError",
    "ConflictError",
    "ValidationError",
    "RateLimitError",
    "ServerError",
    "HearthConnectionError",
    "__version__",
]
