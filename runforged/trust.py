"""The per-user trust store, and the TrustedWorkspace token every Python spawn requires.

A workspace's settings choose which interpreter and module run, so opening a stranger's
repository must not run anything until the user trusts the folder. Trusting a folder
covers everything beneath it; paths are compared after resolving symlinks, so a symlink
inside a trusted folder that points elsewhere is judged by where it points.

The store is ``<config dir>/trust.json`` (mode 0600, directory 0700), written atomically.
A missing file means nothing is trusted; a corrupt one is an error, never emptied.
"""

from __future__ import annotations

import builtins
import fcntl
import json
import os
import shlex
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import msgspec
import structlog

from runforge_contract.atomicio import write_json_atomic
from runforge_protocol.errors import ErrorCode
from runforged.errors import RunforgeError
from runforged.paths import validate_workspace

TRUST_FILE = "trust.json"
TRUST_SCHEMA_VERSION = "runforge.trust.v1"

log = structlog.get_logger(__name__)


class TrustEntry(msgspec.Struct, kw_only=True):
    """One trusted folder: absolute, symlinks resolved when it was trusted."""

    path: str
    trusted_at: str  # ISO 8601 UTC


class _TrustFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    schema_version: str
    workspaces: list[TrustEntry]


def trust_store_path(config_directory: Path) -> Path:
    return config_directory / TRUST_FILE


# Only TrustStore.require holds this, so no other code can make a TrustedWorkspace.
_ISSUED_BY_REQUIRE = object()


@dataclass(frozen=True)
class TrustedWorkspace:
    """Proof that ``path`` was trusted when :meth:`TrustStore.require` checked it. The
    spawn functions accept nothing else, so every Python spawn checks trust by
    construction; they call :meth:`recheck` right before spawning, so a run queued before
    the user withdrew trust does not start afterwards."""

    path: Path
    store: TrustStore = field(repr=False, compare=False)
    issued_by: object = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.issued_by is not _ISSUED_BY_REQUIRE:
            raise TypeError("a TrustedWorkspace is only created by TrustStore.require()")

    def recheck(self) -> None:
        """Raise ``WORKSPACE_NOT_TRUSTED`` if trust was withdrawn since it was issued."""
        self.store.require(str(self.path))


def _resolve_absolute(path: str | os.PathLike[str]) -> Path:
    text = os.fspath(path)
    if not text or "\0" in text or not os.path.isabs(text):
        raise RunforgeError(
            ErrorCode.INVALID_PATH,
            f"{text!r} is not an absolute path",
            details={"path": text},
        )
    return Path(os.path.realpath(text))


def _covers(entry: TrustEntry, path: Path) -> bool:
    trusted = Path(entry.path)
    return trusted == path or trusted in path.parents


class TrustStore:
    """The trust file, read afresh on every question (it is small, and the file is the
    truth), changed under an exclusive lock so that concurrent writers lose nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> builtins.list[TrustEntry]:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._invalid(f"cannot read the trust store {self.path}: {exc}") from exc
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            # Anyone who can write this file can make the daemon run code as this user.
            if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise self._invalid(
                    f"the trust store {self.path} is writable by other users or not owned by"
                    " you; refusing to use it",
                    remediation="check who changed it, then: chmod 600 "
                    + shlex.quote(str(self.path)),
                )
            raw = handle.read()
        try:
            document = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            line = getattr(exc, "lineno", None)
            where = f" (line {line})" if line else ""
            raise self._invalid(f"the trust store {self.path} is corrupt{where}: {exc}") from exc
        try:
            parsed = msgspec.convert(document, _TrustFile)
        except msgspec.ValidationError as exc:
            raise self._invalid(f"the trust store {self.path} is corrupt: {exc}") from exc
        if parsed.schema_version != TRUST_SCHEMA_VERSION:
            raise self._invalid(
                f"the trust store {self.path} has unknown schema_version {parsed.schema_version!r}"
            )
        for entry in parsed.workspaces:
            if not os.path.isabs(entry.path):
                raise self._invalid(
                    f"the trust store {self.path} is corrupt: {entry.path!r} is not absolute"
                )
        return parsed.workspaces

    def _invalid(self, message: str, remediation: str = "") -> RunforgeError:
        return RunforgeError(
            ErrorCode.SETTINGS_INVALID,
            message,
            remediation=remediation
            or f"repair or remove {shlex.quote(str(self.path))}, then trust your folders again",
            details={"file": str(self.path)},
        )

    def _save(self, entries: builtins.list[TrustEntry]) -> None:
        document = _TrustFile(
            schema_version=TRUST_SCHEMA_VERSION,
            workspaces=sorted(entries, key=lambda entry: entry.path),
        )
        write_json_atomic(self.path, msgspec.to_builtins(document), mode=0o600)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode is filtered by the umask and skipped for an existing directory.
        os.chmod(directory, 0o700)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def trust(self, path: str) -> TrustEntry:
        """Trust the existing folder ``path`` and everything beneath it. Idempotent: trusting
        it again returns the original entry. A folder beneath a trusted one gets its own
        entry, so it stays trusted if the parent is untrusted later."""
        folder = validate_workspace(path)
        with self._locked():
            entries = self._load()
            for entry in entries:
                if entry.path == str(folder):
                    return entry
            added = TrustEntry(path=str(folder), trusted_at=datetime.now(timezone.utc).isoformat())
            self._save([*entries, added])
        log.info("workspace_trusted", path=added.path)
        return added

    def untrust(self, path: str) -> bool:
        """Withdraw trust from exactly ``path``; afterwards it is not trusted.

        Returns False, changing nothing, when ``path`` was not trusted at all (so scripts
        can untrust idempotently). Raises ``INVALID_PATH`` when it is trusted only because
        a folder above it is: that trust cannot be withdrawn here, and silently keeping
        it would mislead. The folder need not exist any more.
        """
        folder = _resolve_absolute(path)
        literal = os.path.normpath(path)
        with self._locked():
            entries = self._load()
            exact = [entry for entry in entries if entry.path in (str(folder), literal)]
            remaining = [entry for entry in entries if entry not in exact]
            through = [entry for entry in remaining if _covers(entry, folder)]
            if through:
                parent = through[0].path
                raise RunforgeError(
                    ErrorCode.INVALID_PATH,
                    f"{folder} is trusted because {parent} is; untrusting only {folder}"
                    " is not possible",
                    remediation=f"runforgectl untrust {shlex.quote(parent)}",
                    details={"path": str(folder), "trusted_through": parent},
                )
            if not exact:
                return False
            self._save(remaining)
        log.info("workspace_untrusted", path=str(folder))
        return True

    def list(self) -> builtins.list[TrustEntry]:
        """Every trusted folder, sorted by path."""
        return sorted(self._load(), key=lambda entry: entry.path)

    def is_trusted(self, path: str | os.PathLike[str]) -> bool:
        """Whether absolute ``path``, symlinks resolved, is a trusted folder or beneath one."""
        resolved = _resolve_absolute(path)
        return any(_covers(entry, resolved) for entry in self._load())

    def require(self, workspace: str) -> TrustedWorkspace:
        """The trusted workspace, or ``WORKSPACE_NOT_TRUSTED`` with the exact command that
        trusts it. Checks the path first (``INVALID_PATH``, ``WORKSPACE_NOT_FOUND``)."""
        folder = validate_workspace(workspace)
        if not self.is_trusted(folder):
            log.info("untrusted_workspace_refused", workspace=str(folder))
            raise RunforgeError(
                ErrorCode.WORKSPACE_NOT_TRUSTED,
                f"the workspace {folder} is not trusted, so RunForge will not run its"
                " Python interpreter or code",
                remediation=f"runforgectl trust {shlex.quote(str(folder))}",
                details={"workspace": str(folder)},
            )
        return TrustedWorkspace(path=folder, store=self, issued_by=_ISSUED_BY_REQUIRE)
