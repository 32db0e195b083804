"""What a trainer's interpreter sees: its environment, and a PYTHONPATH directory that
makes the runner importable without the daemon's site-packages.

The directory (``<runtime dir>/pythonpath``) holds only symlinks to ``runforge_runner``
and to what it imports of ours, ``runforge_contract`` (both standard library only): on
a foreign interpreter's path they add nothing else of the daemon's.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Mapping
from pathlib import Path

# The packages a trainer may import from the daemon's installation.
TRAINER_PACKAGES = ("runforge_runner", "runforge_contract")


def package_dir(name: str) -> Path:
    """Where the installed package ``name`` lives, found without importing it (the
    daemon runs the trainer's packages, it never imports them)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the package {name} is not installed beside runforged")
    return Path(spec.submodule_search_locations[0]).resolve()


class TrainerPath:
    """The PYTHONPATH directory given to trainers (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def create(self) -> None:
        self.directory.mkdir(mode=0o700, exist_ok=True)
        for name in TRAINER_PACKAGES:
            link = self.directory / name
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            link.symlink_to(package_dir(name), target_is_directory=True)

    def remove(self) -> None:
        for name in TRAINER_PACKAGES:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / name).unlink()
        with contextlib.suppress(OSError):
            self.directory.rmdir()


def child_environment(base: Mapping[str, str], trainer_path_dir: Path) -> dict[str, str]:
    """The trainer's environment: the daemon's, minus anything that would put the daemon's
    own packages on the trainer's path, plus a PYTHONPATH holding only the runner (and
    the contract it imports)."""
    env = {
        k: v
        for k, v in base.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "NOTIFY_SOCKET")
        and not k.startswith(("WATCHDOG_", "RUNFORGED_"))
    }
    env["PYTHONPATH"] = str(trainer_path_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env
