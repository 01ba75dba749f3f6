"""Test-suite policy and helpers shared by every test file.

``BATCHED_REQUIRE_ALL=1`` (set by ``scripts/test.sh``) turns every skip into a failure, except
for tests marked ``cuda`` on a machine without CUDA: a test whose optional dependency is
missing must not pass silently as "skipped" in the project's own runs.

``BATCHED_EXPECT_INSTALLED_IN=DIR`` (set by ``scripts/check_dist.sh``) makes the run fail unless
``batched`` is imported from under ``DIR``, so that a test of the installed wheel cannot
silently test the source tree instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator

import pytest

REQUIRE_ALL = os.environ.get("BATCHED_REQUIRE_ALL") == "1"


def wait_until(
    predicate: Callable[[], bool], what: str = "a condition", timeout: float = 20.0
) -> None:
    """Polls ``predicate`` until it holds; fails naming ``what`` after ``timeout`` seconds,
    which a passing test never reaches."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.002)


def pytest_configure(config: pytest.Config) -> None:
    expected = os.environ.get("BATCHED_EXPECT_INSTALLED_IN")
    if expected:
        import batched

        if not os.path.realpath(batched.__file__).startswith(os.path.realpath(expected)):
            raise pytest.UsageError(
                f"batched was imported from {batched.__file__}, not from under {expected}"
            )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[assignment]
    if REQUIRE_ALL and report.skipped and item.get_closest_marker("cuda") is None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, and BATCHED_REQUIRE_ALL=1 allows no skip: {reason}"
