"""docs/guarantees.md names the tests that prove each guarantee: every name must exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = re.compile(r"`(test_\w+\.py)::(test_\w+)`")


def test_every_test_named_in_the_guarantees_exists() -> None:
    text = (ROOT / "docs" / "guarantees.md").read_text()
    references = REFERENCE.findall(text)
    assert len(references) > 50
    missing = []
    for file_name, test_name in sorted(set(references)):
        path = ROOT / "azexport_assets_tests" / file_name
        tree = ast.parse(path.read_text()) if path.exists() else ast.Module(body=[])
        defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        if test_name not in defined:
            missing.append(f"{file_name}::{test_name}")
    assert missing == []
