"""The daemon context: everything a request handler may use, typed, wired together once
per daemon (settings, trust, probes, runs, indexes, executors, the server itself)."""

from __future__ import annotations

import asyncio
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, get_args

import structlog

from runforge_contract.params import PARAM_SPECS, InvalidParam
from runforge_contract.timestamps import utc_now
from runforge_protocol.errors import ErrorCode
from runforge_protocol.messages import ErrorInfo, OrphanInfo, Train, WorkspaceStatus
from runforged import beneath, paths, run_folder
from runforged.disk_formats import RequestRecord
from runforged.durable_state import state_dir
from runforged.errors import RunforgeError
from runforged.executor import Executor, LocalExecutor
from runforged.index_writer import IndexWriters
from runforged.monitor_executor import MonitorExecutor
from runforged.ray_executor import RayExecutor, RayPlacement, job_environment, ray_device
from runforged.reconciliation import reconcile
from runforged.server import Daemon
from runforged.settings import (
    Device,
    ModelFamily,
    Preset,
    Profile,
    ResolvedSettings,
    SettingSource,
    config_dir,
    resolve_settings,
)
from runforged.supervisor import LiveRun, RunSupervisor
from runforged.trainer_env import TrainerPath, child_environment
from runforged.trust import TrustedWorkspace, TrustStore, trust_store_path
from runforged.workspace_python import InterpreterProbes, choose_device

log = structlog.get_logger("runforged.context")

PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


BUNDLED_RUNNER = "runforge_runner"

# Each choice a Train request may make, with its option in runforgectl.
_TRAIN_CHOICES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("preset", "--preset", get_args(Preset)),
    ("model", "--model", get_args(ModelFamily)),
    ("profile", "--profile", get_args(Profile)),
    ("device", "--device", get_args(Device)),
)


def check_train_request(request: Train) -> None:
    """The request's own fields, before settings are read or anything is created: a bad
    choice is a BAD_REQUEST naming the field and the valid values (every client gets the
    same answer runforgectl's parser gives)."""
    for field, option, allowed in _TRAIN_CHOICES:
        value = getattr(request, field)
        if value is not None and value not in allowed:
            raise RunforgeError(
                ErrorCode.BAD_REQUEST,
                f"invalid {field} {value!r}; valid: {', '.join(allowed)}",
                f"use {option} with one of: {', '.join(allowed)}",
                {"field": field, "value": value, "valid": list(allowed)},
            )
    if request.grace_s is not None and not (
        math.isfinite(request.grace_s) and request.grace_s >= 0
    ):
        raise RunforgeError(
            ErrorCode.BAD_REQUEST,
            f"grace must be a number of seconds >= 0, got {request.grace_s!r}",
            "pass --grace 0 to kill at once, or a positive number of seconds",
            {"field": "grace_s", "value": request.grace_s},
        )
    if request.label is not None and not request.label.strip():
        raise RunforgeError(
            ErrorCode.BAD_REQUEST,
            "the label column name is empty",
            "pass --label COLUMN with the name of a column of the dataset",
            {"field": "label"},
        )


def check_params(settings: ResolvedSettings, params: dict[str, str]) -> None:
    """Every ``--param`` before anything is created: names always; with the bundled runner
    also each name against the model family's hyperparameters and each value against its
    parser (``runforge_contract.params``, the runner's own table), so a bad value never
    costs a run folder."""
    for name in params:
        if not PARAM_NAME.match(name):
            raise RunforgeError(
                ErrorCode.BAD_REQUEST,
                f"invalid parameter name {name!r}",
                "use --param NAME=VALUE with NAME made of letters, digits and _",
                {"field": "params", "param": name},
            )
    if settings.ml_runner_module != BUNDLED_RUNNER:
        return  # a custom runner has its own parameters and checks them itself
    specs = PARAM_SPECS.get(settings.model_family, {})
    for name, raw in params.items():
        spec = specs.get(name)
        if spec is None:
            raise RunforgeError(
                ErrorCode.BAD_REQUEST,
                f"unknown parameter {name!r} for {settings.model_family}; valid: "
                + ", ".join(specs),
                f"use one of {', '.join(specs)} (runforgectl train --param NAME=VALUE)",
                {"field": "params", "param": name, "valid": list(specs)},
            )
        try:
            spec.parse(name, raw)
        except InvalidParam as exc:
            raise RunforgeError(
                ErrorCode.BAD_REQUEST,
                str(exc),
                f"{name}: {spec.meaning}",
                {"field": "params", "param": name, "value": raw},
            ) from None


class DaemonContext:
    def __init__(self, server: Daemon) -> None:
        self.server = server
        self.config_dir = config_dir()
        self.trust = TrustStore(trust_store_path(self.config_dir))
        self.probes = InterpreterProbes()
        self.trainer_path = TrainerPath(server.endpoints.runtime_dir / "pythonpath")
        self.indexes = IndexWriters()
        self.state_dir = state_dir()
        self.ray = RayExecutor()
        self.executors: dict[str, Executor] = {
            LocalExecutor.name: LocalExecutor(),
            RayExecutor.name: self.ray,
        }
        self.supervisor = RunSupervisor(
            publisher=server.publisher,
            counters=server.counters,
            indexes=self.indexes,
            state_dir=self.state_dir,
            executors=self.executors,
            # Every local run gets its own monitor (it outlives the daemon); the local
            # executor only reconciles trainers of daemons from before monitors.
            monitors=MonitorExecutor(),
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.trainer_path.create()
        outcomes = await reconcile(
            state_dir=self.state_dir,
            records=self.supervisor.inflight_records,
            journal=self.supervisor.cancel_journal,
            executors=self.executors,
            indexes=self.indexes,
            publisher=self.server.publisher,
            adopt=self.supervisor.adopt,
        )
        if outcomes:
            log.info("reconciled_runs", runs={run_id: s.value for run_id, s in outcomes})
        taken = self.supervisor.resume(lambda workspace: self.trust.require(str(workspace)))
        if taken:
            log.info("runs_taken_over", runs=taken)

    async def stop(self, *, keep_runs: bool = False) -> None:
        await self.supervisor.shutdown(keep_runs=keep_runs)
        await self.indexes.aclose()
        self.trainer_path.remove()

    def child_env(self) -> dict[str, str]:
        return child_environment(os.environ, self.trainer_path.directory)

    # ------------------------------------------------------------------ workspaces

    def settings_for(
        self, workspace: Path, overrides: dict[str, Any] | None = None
    ) -> ResolvedSettings:
        return resolve_settings(
            workspace,
            config_directory=self.config_dir,
            overrides=overrides,
            default_python=sys.executable,
        )

    async def read_settings(
        self, workspace: Path, overrides: dict[str, Any] | None = None
    ) -> ResolvedSettings:
        """``settings_for`` off the event loop: the files it parses are the workspace's,
        of any size up to the cap, and ``ping`` must not wait for them."""
        return await asyncio.to_thread(self.settings_for, workspace, overrides)

    async def orphans(self, workspace: Path) -> list[OrphanInfo]:
        writer = await self.indexes.get(workspace)
        return await writer.orphans(self.supervisor.in_flight_ids(workspace))

    async def workspace_status(self, workspace_arg: str) -> WorkspaceStatus:
        workspace = paths.validate_workspace(workspace_arg)
        status = WorkspaceStatus(
            workspace=str(workspace), trusted=False, orphans=await self.orphans(workspace)
        )
        try:
            settings = await self.read_settings(workspace)
            status.settings = settings
            trusted = self.trust.require(str(workspace))
        except RunforgeError as exc:
            status.problems.append(_info(exc))
            return status
        status.trusted = True
        env = self.child_env()
        try:
            interpreter = await self.probes.check_interpreter(
                trusted, settings.python_path, env=env
            )
            status.interpreter = interpreter
            gpu = await self.probes.probe_gpu(trusted, settings.python_path, env=env)
            status.gpu = gpu
            status.device = choose_device(settings.device, settings.preset, gpu)
        except RunforgeError as exc:
            status.problems.append(_info(exc))
        return status

    # ------------------------------------------------------------------ train

    async def start_run(self, request: Train) -> LiveRun:
        """Resolve, check trust, allocate the run, write request.json, queue it."""
        if not self.supervisor.accepting:
            raise RunforgeError(ErrorCode.SHUTTING_DOWN, "the daemon is shutting down")
        workspace = paths.validate_workspace(request.workspace)
        check_train_request(request)
        overrides = {
            key: value
            for key, value in (
                ("preset", request.preset),
                ("modelFamily", request.model),
                ("profile", request.profile),
                ("datasetPath", request.dataset),
                ("labelColumn", request.label),
                ("device", request.device),
                ("cancelGraceSeconds", request.grace_s),
                ("executor", request.executor),
                ("rayAddress", request.ray_address),
            )
            if value is not None
        }
        settings = await self.read_settings(workspace, overrides)
        trusted = self.trust.require(str(workspace))
        check_params(settings, request.params)
        dataset = self._dataset(workspace, settings)
        placement: RayPlacement | None = None
        if settings.executor == RayExecutor.name:
            # The trainer runs on the cluster: its interpreter and GPUs are there, not
            # here. What can be checked here is that the cluster answers.
            await self.ray.check_reachable(settings.ray_address, str(workspace))
            env = job_environment(settings.ray_env_vars, os.environ)
            device = ray_device(settings.device, settings.ray_resources)
            placement = RayPlacement(
                address=settings.ray_address,
                resources=settings.ray_resources,
                python_set=settings.origins["pythonPath"].source is not SettingSource.DEFAULT,
                grace_s=settings.cancel_grace_seconds,
            )
        else:
            env = self.child_env()
            await self.probes.check_interpreter(trusted, settings.python_path, env=env)
            device = await self._device(trusted, settings, env)
        run_id, run_dir = self._allocate_run_dir(workspace)
        name = request.name or run_id
        argv = [
            settings.python_path,
            "-u",
            "-m",
            settings.ml_runner_module,
            "train",
            f"--preset={settings.preset}",
            f"--out={run_dir}",
            f"--device={device}",
            f"--model={settings.model_family}",
            f"--profile={settings.profile}",
            f"--name={name}",
        ]
        if request.seed is not None:
            argv.append(f"--seed={request.seed}")
        if settings.label_column is not None:
            argv.append(f"--label={settings.label_column}")
        argv += [f"--param={k}={v}" for k, v in request.params.items()]
        record = RequestRecord(
            run_id=run_id,
            workspace=str(workspace),
            run_dir=run_folder.relative_run_dir(run_id),
            created_at=utc_now(),
            name=name,
            preset=settings.preset,
            model=settings.model_family,
            profile=settings.profile,
            seed=request.seed,
            params=dict(request.params),
            device=device,
            dataset_path=str(dataset),
            python_path=settings.python_path,
            runner_module=settings.ml_runner_module,
            cancel_grace_s=settings.cancel_grace_seconds,
            argv=argv,
        )
        try:
            run_folder.write_request(run_dir, record)
        except OSError as exc:
            # A full disk, most likely: no empty run folder stays behind.
            run_folder.remove_new_run_folder(workspace, run_id)
            raise run_folder.workspace_error(
                workspace, f"{record.run_dir}/{run_folder.REQUEST_FILE}", exc
            ) from exc
        env["RUNFORGE_DATASET"] = str(dataset)
        env["RUNFORGE_CANCEL_GRACE_S"] = repr(float(settings.cancel_grace_seconds))
        env["RUNFORGE_RUN_ID"] = run_id
        run = LiveRun(
            run_id=run_id,
            workspace=workspace,
            trusted=trusted,
            request=record,
            argv=argv,
            env=env,
            grace_s=settings.cancel_grace_seconds,
            max_concurrent=settings.max_concurrent_runs,
            max_concurrent_global=settings.max_concurrent_runs_global,
            max_log_bytes=settings.max_log_bytes,
            executor=settings.executor,
            placement=placement,
        )
        self.supervisor.submit(run)
        log.info("run_submitted", run_id=run_id, workspace=str(workspace), state=run.state.value)
        return run

    def _dataset(self, workspace: Path, settings: ResolvedSettings) -> Path:
        if not settings.dataset_path:
            raise RunforgeError(
                ErrorCode.SETTINGS_INVALID,
                "no dataset: pass --dataset CSV or set runforge.datasetPath",
                "runforgectl train --dataset data.csv (runforgectl sample-data copies samples)",
                {"key": "datasetPath"},
            )
        dataset = paths.resolve_inside(workspace, settings.dataset_path)
        if not dataset.is_file():
            raise RunforgeError(
                ErrorCode.INVALID_PATH,
                f"the dataset {dataset} does not exist or is not a file",
                details={"path": settings.dataset_path},
            )
        return dataset

    async def _device(
        self, trusted: TrustedWorkspace, settings: ResolvedSettings, env: dict[str, str]
    ) -> str:
        if settings.device == "cpu":
            return "cpu"
        gpu = await self.probes.probe_gpu(trusted, settings.python_path, env=env)
        return choose_device(settings.device, settings.preset, gpu).device

    def _allocate_run_dir(self, workspace: Path) -> tuple[str, Path]:
        """A new, empty run folder (never through a symlink); raises RunforgeError."""
        with beneath.opened(run_folder.create_runs_folder(workspace)) as runs_fd:
            for _ in range(100):
                run_id = paths.new_run_id()
                try:
                    # Atomic: exactly one caller creates a given folder.
                    if run_folder.create_run_folder(runs_fd, run_id):
                        return run_id, paths.run_dir(workspace, run_id)
                except OSError as exc:
                    raise run_folder.workspace_error(
                        workspace, run_folder.relative_run_dir(run_id), exc
                    ) from exc
        raise RunforgeError(ErrorCode.INTERNAL_ERROR, "could not allocate a unique run id")


def _info(exc: RunforgeError) -> ErrorInfo:
    return ErrorInfo(
        code=exc.code, message=exc.message, remediation=exc.remediation, details=exc.details
    )
