"""The adapters and runforgectl read progress the same way: one list of the model families
whose ``total_epochs`` is a ceiling (``max_iter``), kept in three languages."""

from __future__ import annotations

import re

from runforge_contract.trainer_events import CEILING_FAMILIES
from tests.editors.tools import NVIM_DIR, VSCODE_DIR


def test_every_client_knows_the_same_ceiling_families() -> None:
    typescript = (VSCODE_DIR / "src" / "core" / "runs.ts").read_text()
    found = re.search(r"CEILING_FAMILIES: ReadonlySet<string> = new Set\(\[(.*?)\]\)", typescript)
    assert found is not None
    in_vscode = set(re.findall(r'"(\w+)"', found.group(1)))
    lua = (NVIM_DIR / "lua" / "runforge" / "init.lua").read_text()
    found = re.search(r"local CEILING_FAMILIES = \{(.*?)\}", lua)
    assert found is not None
    in_nvim = set(re.findall(r"(\w+) = true", found.group(1)))
    assert in_vscode == in_nvim == set(CEILING_FAMILIES) == {"logistic_regression", "linear_svc"}
