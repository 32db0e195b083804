"""A description of the machine and software the numbers were taken on."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

import zmq

PACKAGES = ("pyzmq", "msgspec", "psutil", "structlog", "circus", "supervisor")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(_memory_gib(), 1),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "libzmq": zmq.zmq_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "load_average": os.getloadavg(),
    }
