"""Decorated callables keep useful types: ``mypy --strict`` checks tests/typing/cases.py, whose
``assert_type`` calls fail the check if a decorator loses an item or result type."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CASES = Path(__file__).parent / "typing" / "cases.py"


@pytest.mark.timeout(300)
def test_decorated_functions_and_methods_keep_their_types() -> None:
    pytest.importorskip("mypy")
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(CASES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Success" in checked.stdout
