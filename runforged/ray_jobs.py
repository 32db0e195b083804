"""A client of Ray's Job REST API (``/api/jobs/``) written with the standard library.

Ray's own SDK (``ray.job_submission``) costs over a second of CPU to import and pulls
the whole of Ray into the daemon; the REST API it wraps is small and stable, so the
daemon speaks it directly. Calls are blocking (``http.client``); the executor runs them
in a thread. Every failure to reach the cluster or an unexpected answer is a
:class:`RayJobsError` that says which address, which call and what went wrong.

Only ``http://`` and ``https://`` dashboard addresses are accepted (``ray://`` is the
Ray Client protocol, which needs the SDK).
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import zipfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
DEFAULT_TIMEOUT_S = 10.0
# Submitting creates the job's supervisor actor before Ray answers: seconds on a busy
# head, more for the first job (worker processes start).
SUBMIT_TIMEOUT_S = 60.0


class JobStatus(str, Enum):
    """Ray's job states (``ray.job_submission.JobStatus``)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.STOPPED, JobStatus.SUCCEEDED, JobStatus.FAILED)


class RayJobsError(Exception):
    """The cluster could not be reached, or answered something unexpected.

    ``unreachable`` tells the two apart: a connection that failed (nothing was submitted)
    versus an answer the daemon could not use."""

    def __init__(self, message: str, *, address: str, unreachable: bool, status: int = 0) -> None:
        super().__init__(message)
        self.address = address
        self.unreachable = unreachable
        self.status = status


@dataclass(frozen=True)
class JobInfo:
    submission_id: str
    status: JobStatus
    message: str
    metadata: dict[str, str]
    start_time_ms: int | None
    end_time_ms: int | None
    driver_exit_code: int | None


def check_address(address: str) -> str:
    """``address`` without a trailing slash, if it is an ``http(s)://host[:port]`` URL;
    raises ValueError (with the reason) otherwise."""
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an http:// or https:// address of the Ray dashboard")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("an address without credentials, query or fragment")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise ValueError("an address with a valid port") from exc
    return address.rstrip("/")


class RayJobsClient:
    """One cluster's Job API. Thread-safe: each call opens its own connection."""

    def __init__(self, address: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.address = check_address(address)
        parts = urlsplit(self.address)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._base = parts.path.rstrip("/")
        self._timeout_s = timeout_s

    # ------------------------------------------------------------------ the calls

    def version(self) -> dict[str, Any]:
        """``GET /api/version``: the cluster's Ray version (a cheap reachability check)."""
        answer = self._call("GET", "/api/version", what="ask the cluster's version")
        return answer if isinstance(answer, dict) else {}

    def submit(
        self,
        *,
        submission_id: str,
        entrypoint: str,
        runtime_env: dict[str, Any],
        metadata: dict[str, str],
        entrypoint_num_cpus: float | None = None,
        entrypoint_resources: dict[str, float] | None = None,
    ) -> str:
        """Submit a job under ``submission_id`` (the run id); returns that id."""
        body: dict[str, Any] = {
            "entrypoint": entrypoint,
            "submission_id": submission_id,
            "runtime_env": runtime_env,
            "metadata": metadata,
        }
        if entrypoint_num_cpus is not None:
            body["entrypoint_num_cpus"] = entrypoint_num_cpus
        if entrypoint_resources:
            body["entrypoint_resources"] = entrypoint_resources
        answer = self._call(
            "POST", "/api/jobs/", body=body, what="submit the job", timeout_s=SUBMIT_TIMEOUT_S
        )
        if not isinstance(answer, dict) or answer.get("submission_id") != submission_id:
            raise self._unexpected("submit the job", answer)
        return submission_id

    def info(self, submission_id: str) -> JobInfo | None:
        """The job's state, or None if the cluster does not know it."""
        answer = self._call(
            "GET", f"/api/jobs/{quote(submission_id)}", what="read the job's state", missing=True
        )
        if answer is None:
            return None
        if not isinstance(answer, dict):
            raise self._unexpected("read the job's state", answer)
        try:
            status = JobStatus(answer.get("status"))
        except ValueError:
            raise self._unexpected("read the job's state", answer) from None
        exit_code = answer.get("driver_exit_code")
        return JobInfo(
            submission_id=submission_id,
            status=status,
            message=str(answer.get("message") or ""),
            metadata=dict(answer.get("metadata") or {}),
            start_time_ms=answer.get("start_time"),
            end_time_ms=answer.get("end_time"),
            driver_exit_code=exit_code if isinstance(exit_code, int) else None,
        )

    def list_jobs(self) -> list[dict[str, Any]]:
        """Every job the cluster knows, as Ray describes them."""
        answer = self._call("GET", "/api/jobs/", what="list the jobs")
        return [job for job in answer if isinstance(job, dict)] if isinstance(answer, list) else []

    def stop(self, submission_id: str) -> bool:
        """Ask Ray to stop the job (fire and forget: Ray signals it later). False if the job
        had already ended; None-safe if the cluster does not know it (False)."""
        answer = self._call(
            "POST", f"/api/jobs/{quote(submission_id)}/stop", what="stop the job", missing=True
        )
        return bool(isinstance(answer, dict) and answer.get("stopped"))

    def logs(self, submission_id: str) -> str:
        """The job's whole log so far (Ray's driver log: stdout and stderr merged)."""
        answer = self._call(
            "GET", f"/api/jobs/{quote(submission_id)}/logs", what="read the job's log", missing=True
        )
        return str(answer.get("logs", "")) if isinstance(answer, dict) else ""

    def delete(self, submission_id: str) -> bool:
        """Forget a terminal job on the cluster (its info and log)."""
        answer = self._call(
            "DELETE", f"/api/jobs/{quote(submission_id)}", what="delete the job", missing=True
        )
        return answer is True or bool(isinstance(answer, dict) and answer)

    def upload_package(self, name: str, archive: bytes) -> str:
        """Make a zip archive available to jobs as ``gcs://<name>`` (Ray's package store,
        keyed by content hash: an archive already there is not sent again)."""
        path = f"/api/packages/gcs/{quote(name)}"
        if self._call("GET", path, what="look for a package", missing=True) is None:
            self._call("PUT", path, raw=archive, what="upload a package")
        return f"gcs://{name}"

    # ------------------------------------------------------------------ mechanics

    def _connection(self, timeout_s: float) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout_s)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout_s)

    def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        body: Any = None,
        raw: bytes | None = None,
        missing: bool = False,
        timeout_s: float | None = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        payload: bytes | None = raw
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        connection = self._connection(timeout_s or self._timeout_s)
        try:
            connection.request(method, self._base + path, body=payload, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise RayJobsError(
                f"cannot reach the Ray cluster at {self.address} to {what}: {exc}",
                address=self.address,
                unreachable=True,
            ) from exc
        finally:
            connection.close()
        if missing and response.status == 404:
            return None
        if response.status >= 400:
            text = data[:500].decode("utf-8", "replace").strip()
            raise RayJobsError(
                f"the Ray cluster at {self.address} refused to {what} "
                f"(HTTP {response.status}): {text}",
                address=self.address,
                unreachable=False,
                status=response.status,
            )
        if not data.strip():
            return True
        try:
            return json.loads(data)
        except ValueError:
            return data.decode("utf-8", "replace")

    def _unexpected(self, what: str, answer: Any) -> RayJobsError:
        return RayJobsError(
            f"the Ray cluster at {self.address} gave an unexpected answer to {what}: "
            f"{str(answer)[:300]}",
            address=self.address,
            unreachable=False,
        )


def package_archive(directory: Path) -> tuple[str, bytes]:
    """A Python package folder as Ray expects a ``py_modules`` archive: a zip whose top
    level is the folder itself (caches and compiled files left out), and its content-
    addressed name ``_ray_pkg_<sha1>.zip``. Deterministic: the same files give the same
    name, so a package is uploaded once per content."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob("*")):
            if "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo") or path.is_dir():
                continue
            relative = path.relative_to(directory.parent).as_posix()
            info = zipfile.ZipInfo(relative, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    data = buffer.getvalue()
    return f"_ray_pkg_{hashlib.sha1(data).hexdigest()}.zip", data
