"""The exception that carries a structured error from deep in the daemon to the reply."""

from __future__ import annotations

from typing import Any

from runforge_protocol.errors import ErrorCode


class RunforgeError(Exception):
    """Raised anywhere in the daemon; the dispatcher turns it into an error reply as is."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        remediation: str = "",
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.remediation = remediation
        self.details = details or {}
