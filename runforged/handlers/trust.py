"""Handlers of trust and settings requests: trust, untrust, list_trusted, settings."""

from __future__ import annotations

import os

import msgspec

from runforge_protocol.messages import (
    GetSettings,
    ListTrusted,
    SettingsResult,
    TrustPath,
    TrustResult,
    UntrustPath,
)
from runforged import paths
from runforged.server import Daemon, handles


def _trusted_paths(daemon: Daemon) -> list[str]:
    return [entry.path for entry in daemon.services.trust.list()]


@handles(TrustPath)
def trust(daemon: Daemon, request: TrustPath) -> TrustResult:
    store = daemon.services.trust
    folder = paths.validate_workspace(request.path)
    was_trusted = store.is_trusted(folder)
    entry = store.trust(str(folder))
    return TrustResult(path=entry.path, changed=not was_trusted, trusted=_trusted_paths(daemon))


@handles(UntrustPath)
def untrust(daemon: Daemon, request: UntrustPath) -> TrustResult:
    changed = daemon.services.trust.untrust(request.path)
    # The folder may be gone; report the path as the store compares it (symlinks resolved).
    resolved = os.path.realpath(request.path)
    return TrustResult(path=resolved, changed=changed, trusted=_trusted_paths(daemon))


@handles(ListTrusted)
def list_trusted(daemon: Daemon, request: ListTrusted) -> TrustResult:
    return TrustResult(path="", changed=False, trusted=_trusted_paths(daemon))


@handles(GetSettings)
async def settings(daemon: Daemon, request: GetSettings) -> SettingsResult:
    workspace = paths.validate_workspace(request.workspace)
    resolved = await daemon.services.read_settings(workspace)
    return SettingsResult(workspace=str(workspace), settings=msgspec.to_builtins(resolved))
