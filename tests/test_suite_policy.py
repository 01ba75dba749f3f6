"""The suite's own policy (conftest.py): under BATCHED_REQUIRE_ALL=1 a skipped test fails,
unless it is a CUDA test."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()

SAMPLE = """
import pytest

def test_needs_a_missing_package():
    pytest.importorskip("no_such_package_for_batched_tests")

@pytest.mark.cuda
@pytest.mark.skipif(True, reason="CUDA is not available")
def test_on_cuda():
    pass

def test_plain():
    pass
"""


@pytest.mark.parametrize("require_all", [True, False])
def test_a_skip_fails_only_when_every_package_is_required(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, require_all: bool
) -> None:
    monkeypatch.setenv("BATCHED_REQUIRE_ALL", "1" if require_all else "0")
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    cuda: needs CUDA\n")
    pytester.makepyfile(test_sample=SAMPLE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    if require_all:
        result.assert_outcomes(passed=1, failed=1, skipped=1)
        result.stdout.fnmatch_lines(["*BATCHED_REQUIRE_ALL=1 allows no skip*"])
    else:
        result.assert_outcomes(passed=1, skipped=2)
