"""The distribution as users get it: sdist and wheel built from this checkout, and a
wheelhouse of the runtime dependencies so that installing needs no index.

The wheelhouse holds the exact versions installed in the environment running the tests
(that is, the lock file's), downloaded once into ``.venv/wheelhouse/<key>/`` and reused
by later sessions; the built distributions are made once per session.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import REPO_ROOT, remove_tree, short_tempdir


@dataclass(frozen=True)
class Distributions:
    wheel: Path
    sdist: Path
    wheelhouse: Path


def _runtime_closure() -> list[str]:
    """``name==version`` of every installed distribution the runtime needs, recursively."""
    wanted: dict[str, str] = {}
    todo = [_requirement_name(r) for r in _requires("runforge")]
    while todo:
        name = todo.pop()
        key = _canonical(name)
        if key in wanted:
            continue
        wanted[key] = importlib.metadata.version(name)
        todo.extend(_requirement_name(r) for r in _requires(name))
    return sorted(f"{name}=={version}" for name, version in wanted.items())


def _requires(name: str) -> list[str]:
    """Unconditional requirements of an installed distribution (no extras, markers that
    hold here)."""
    from packaging.requirements import Requirement

    found = []
    for text in importlib.metadata.requires(name) or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            found.append(text)
    return found


def _requirement_name(text: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", text)
    assert match, text
    return match.group(0)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _wheelhouse() -> Path:
    pins = _runtime_closure()
    key = hashlib.sha256("\n".join([sys.version, *pins]).encode()).hexdigest()[:16]
    house = REPO_ROOT / ".venv" / "wheelhouse" / key
    if not (house / ".complete").exists():
        house.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                *(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"),
                *("--only-binary", ":all:", "--dest", str(house), *pins),
            ],
            check=True,
            timeout=600,
        )
        (house / ".complete").write_text("\n".join(pins) + "\n")
    return house


def _snapshot(dest: Path) -> Path:
    """The checkout's tracked files, copied into ``dest``: the build then reads a tree that
    nothing writes into meanwhile (while the suite runs, trainers and pytest write bytecode
    under tests/, and a file listed for the sdist could vanish before it is copied)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True)
    if listed.returncode != 0:  # not a git checkout (an unpacked sdist): copy the tree
        noise = ("__pycache__", "*.pyc*", ".venv*", "node_modules", ".git", "build", "*.egg-info")
        shutil.copytree(REPO_ROOT, dest, symlinks=True, ignore=shutil.ignore_patterns(*noise))
        return dest
    for name in listed.stdout.decode().split("\0"):
        source = REPO_ROOT / name
        if not name or not (source.is_file() or source.is_symlink()):
            continue  # deleted in the working tree
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), target)
        else:
            shutil.copy2(source, target)
    return dest


@pytest.fixture(scope="session")
def distributions() -> Iterator[Distributions]:
    out = short_tempdir()
    try:
        tree = _snapshot(out / "checkout")
        # sdist first, then the wheel from the unpacked sdist (what `python -m build`
        # does): a file missing from the sdist is then missing from the wheel too, and no
        # stale build/ folder of the checkout can leak into it.
        built = subprocess.run(
            [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(tree)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if built.returncode != 0:
            pytest.fail(f"python -m build exited {built.returncode}:\n{built.stderr[-4000:]}")
        [wheel] = out.glob("runforge-*.whl")
        [sdist] = out.glob("runforge-*.tar.gz")
        yield Distributions(wheel=wheel, sdist=sdist, wheelhouse=_wheelhouse())
    finally:
        remove_tree(out)
