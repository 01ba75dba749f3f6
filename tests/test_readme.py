"""Every ``python`` block of README.md runs as written, each in a fresh interpreter, as a user
who pastes it into a file would run it."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def readme_blocks() -> list[tuple[str, str]]:
    """(heading of the section the block is in, code) for each python block."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = []
    for match in BLOCK.finditer(text):
        headings = re.findall(r"^#+ (.+)$", text[: match.start()], re.MULTILINE)
        blocks.append((headings[-1] if headings else "top", match.group(1)))
    return blocks


BLOCKS = readme_blocks()


def test_the_readme_has_runnable_examples() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize(
    "code", [code for _, code in BLOCKS], ids=[f"{i}-{h}" for i, (h, _) in enumerate(BLOCKS)]
)
def test_readme_block_runs(code: str, tmp_path: Path) -> None:
    for module in re.findall(r"^(?:import|from) (\w+)", code, re.MULTILINE):
        if module != "batched" and importlib.util.find_spec(module) is None:
            pytest.skip(f"the example needs {module}")
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
