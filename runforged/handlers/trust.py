"""Handlers of trust and settings requests: trust, untrust, list_trusted, settings."""

from __future__ import annotations

import os

from runforge_protocol.messages import (
    GetSettings,
    ListTrusted,
    SettingsResult,
    TrustPath,
    TrustResult,
    UntrustPath,
)
from runforged import paths
from runforged.context import DaemonContext


def _trusted_paths(ctx: DaemonContext) -> list[str]:
    return [entry.path for entry in ctx.trust.list()]


def trust(ctx: DaemonContext, request: TrustPath) -> TrustResult:
    store = ctx.trust
    folder = paths.validate_workspace(request.path)
    was_trusted = store.is_trusted(folder)
    entry = store.trust(str(folder))
    return TrustResult(path=entry.path, changed=not was_trusted, trusted=_trusted_paths(ctx))


def untrust(ctx: DaemonContext, request: UntrustPath) -> TrustResult:
    changed = ctx.trust.untrust(request.path)
    # The folder may be gone; report the path as the store compares it (symlinks resolved).
    resolved = os.path.realpath(request.path)
    return TrustResult(path=resolved, changed=changed, trusted=_trusted_paths(ctx))


def list_trusted(ctx: DaemonContext, request: ListTrusted) -> TrustResult:
    return TrustResult(path="", changed=False, trusted=_trusted_paths(ctx))


async def settings(ctx: DaemonContext, request: GetSettings) -> SettingsResult:
    workspace = paths.validate_workspace(request.workspace)
    resolved = await ctx.read_settings(workspace)
    return SettingsResult(workspace=str(workspace), settings=resolved)
