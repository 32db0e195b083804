"""The one list of runforgectl's commands: name, the module that implements it, a
one-line summary and an example. The parser, ``--help``, shell completion and the
start-up fast path all read this list; each module's ``configure(name, parser)`` adds the
command's arguments and sets its handler.

Only the named command's module is imported on a normal run: start-up cost is a feature.
"""

from __future__ import annotations


class Command:
    """One command. A plain class: a NamedTuple costs more start-up than this whole list."""

    __slots__ = ("example", "module", "name", "summary", "workspace")

    def __init__(
        self, name: str, module: str, summary: str, example: str, workspace: bool = True
    ) -> None:
        self.name = name
        self.module = module  # under runforgectl.commands
        self.summary = summary
        self.example = example
        self.workspace = workspace  # takes --workspace/-w


COMMANDS: tuple[Command, ...] = (
    Command("ping", "daemon", "check that the daemon answers", "runforgectl ping", False),
    Command(
        "status",
        "daemon",
        "daemon status (with --workspace: settings, interpreter, GPU)",
        "runforgectl status --workspace ~/project",
    ),
    Command(
        "daemon",
        "daemon",
        "start, stop, restart or install the daemon as a systemd user service",
        "runforgectl daemon start",
        False,
    ),
    Command(
        "trust",
        "trust",
        "trust a workspace folder (and everything beneath it)",
        "runforgectl trust ~/project",
        False,
    ),
    Command("untrust", "trust", "stop trusting a folder", "runforgectl untrust ~/project", False),
    Command(
        "settings",
        "trust",
        "effective settings and where each comes from",
        "runforgectl settings -w ~/project",
    ),
    Command(
        "train",
        "train",
        "start a training run and follow it to its end",
        "runforgectl train --model random_forest --param n_estimators=200",
    ),
    Command(
        "cancel",
        "train",
        "cancel a run (default: the workspace's active run)",
        "runforgectl cancel --grace 10",
    ),
    Command("recover", "runs", "re-add orphaned runs to the index", "runforgectl recover"),
    Command("runs", "runs", "list runs: orphans first, then newest first", "runforgectl runs"),
    Command(
        "show", "runs", "a run's metadata (default: the latest run)", "runforgectl show RUN_ID"
    ),
    Command("metrics", "runs", "a run's metrics", "runforgectl metrics"),
    Command(
        "feature-importance",
        "runs",
        "a run's feature importance",
        "runforgectl feature-importance RUN_ID",
    ),
    Command("coefficients", "runs", "a run's linear coefficients", "runforgectl coefficients"),
    Command(
        "interpretability",
        "runs",
        "a run's interpretability index",
        "runforgectl interpretability",
    ),
    Command("export-md", "runs", "write run-summary.md for a run", "runforgectl export-md RUN_ID"),
    Command(
        "inspect-dataset",
        "runs",
        "describe a CSV dataset",
        "runforgectl inspect-dataset data.csv --label target",
    ),
    Command(
        "inspect-artifact",
        "runs",
        "describe a model artifact",
        "runforgectl inspect-artifact .ml/outputs/RUN_ID/model.pkl",
    ),
    Command("active", "runs", "queued, running and cancelling runs", "runforgectl active"),
    Command(
        "events",
        "events",
        "stream events, one per line",
        "runforgectl events --run RUN_ID --json",
    ),
    Command(
        "bridge",
        "events",
        "JSON-lines stdio bridge to the protocol, for editor adapters",
        'echo \'{"type": "ping", "id": "1"}\' | runforgectl bridge',
        False,
    ),
    Command(
        "sample-data",
        "data",
        "write the bundled sample datasets into a folder",
        "runforgectl sample-data ./data",
    ),
    Command(
        "completion",
        "completion",
        "print a bash or zsh completion script",
        "runforgectl completion bash > ~/.local/share/bash-completion/completions/runforgectl",
        False,
    ),
)

BY_NAME: dict[str, Command] = {c.name: c for c in COMMANDS}
