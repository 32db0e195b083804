"""What every command gets: the parsed arguments, the daemon's endpoints and a client."""

from __future__ import annotations

import argparse
import os
from typing import Any

from runforge_protocol import messages as m
from runforge_protocol.discovery import Endpoints
from runforgectl.client import Client


class Context:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.json: bool = args.json
        self.endpoints = Endpoints.resolve(args.runtime_dir)
        self.client = Client(self.endpoints, timeout_s=args.timeout)

    def workspace(self) -> str:
        return os.path.abspath(self.args.workspace or os.getcwd())

    def call(self, request: m.RequestBase, timeout_s: float | None = None) -> Any:
        return self.client.result(request, timeout_s)
