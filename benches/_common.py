"""Shared helpers for the benchmark scripts in this directory.

Nothing here imports ``batched``, numpy or torch: the same module is imported by the parent
process and by every worker child, including the ones running the pure-Python reference
release inside its own virtual environment.

What is here:

* the reference virtual environment (``batched==0.1.5`` from PyPI), created on first use;
* running a worker child in one interpreter or the other and reading back its JSON result;
* checking, inside a child, that ``import batched`` found the implementation it should;
* timing helpers: percentiles, latency summaries, per-thread context switches from /proc;
* output helpers: markdown tables, number formatting, markdown and JSON results files.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

REF_VERSION = "0.1.5"
IMPLS = ("ours", "ref")
IMPL_LABELS = {"ours": "ours", "ref": REF_VERSION}

# Name of the .pth file that lets the reference venv see this interpreter's numpy and torch.
_PARENT_PTH = "_batched_bench_parent_site.pth"


def log(*parts: object) -> None:
    """Progress messages go to stderr so that stdout holds only the report."""
    print(*parts, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# The reference virtual environment
# --------------------------------------------------------------------------------------------


def ref_venv_dir() -> Path:
    default = Path.home() / ".cache" / "batched" / "ref-venv"
    return Path(os.environ.get("BATCHED_REF_VENV") or default).expanduser()


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _purelib_of(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serialises venv creation between benchmark scripts started at the same time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: no locking
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_ref_venv() -> Path:
    """Returns the reference venv's python, creating and repairing the venv as needed.

    The venv holds only ``batched==0.1.5`` (installed without dependencies). It imports numpy
    and torch at import time; rather than installing torch a second time, a ``.pth`` file in
    the venv appends *this* interpreter's site-packages to its ``sys.path``, after its own
    site-packages, so its own ``batched`` still comes first.
    """
    venv = ref_venv_dir()
    python = _venv_python(venv)
    with _file_lock(venv.parent / (venv.name + ".lock")):
        if not python.exists():
            log(f"[setup] creating reference venv {venv}")
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)

        probe = subprocess.run(
            [str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        ours = "{}.{}".format(*sys.version_info[:2])
        if probe != ours:
            raise RuntimeError(
                f"reference venv {venv} runs Python {probe} but this interpreter is {ours}; "
                "its .pth borrows this interpreter's compiled packages, so they must match. "
                "Delete the venv (or point BATCHED_REF_VENV elsewhere) and run again."
            )

        ref_site = _purelib_of(python)
        if not (ref_site / f"batched-{REF_VERSION}.dist-info").is_dir():
            log(f"[setup] installing batched=={REF_VERSION} into {venv}")
            subprocess.run(
                [
                    str(python),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--no-deps",
                    f"batched=={REF_VERSION}",
                ],
                check=True,
            )

        # This interpreter's site-packages, and any it borrows in turn through a .pth of its
        # own (a .pth in a directory that a .pth added is not read).
        parent_site = sysconfig.get_paths()["purelib"]
        borrowed = [p for p in sys.path if p.endswith("site-packages") and p != parent_site]
        pth = ref_site / _PARENT_PTH
        wanted = "".join(f"{site}\n" for site in [parent_site, *borrowed])
        if not pth.exists() or pth.read_text() != wanted:
            pth.write_text(wanted)
    return python


def worker_python(impl: str) -> Path:
    if impl == "ours":
        return Path(sys.executable)
    if impl == "ref":
        return ensure_ref_venv()
    raise ValueError(f"unknown implementation {impl!r}")


def expected_location(impl: str) -> str:
    """Directory that ``batched/__init__.py`` must live under for ``impl`` (parent side)."""
    if impl == "ref":
        return str(_purelib_of(worker_python("ref")))
    spec = importlib.util.find_spec("batched")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("this interpreter cannot find the batched package under test")
    return str(Path(next(iter(spec.submodule_search_locations))).parent)


def verify_impl(impl: str, expect_dir: str | None) -> dict[str, Any]:
    """Child side: imports ``batched`` and checks that it is the implementation asked for."""
    import batched

    location = Path(batched.__file__).resolve()
    has_core = importlib.util.find_spec("batched._core") is not None
    problems = []
    if expect_dir is not None and not location.is_relative_to(Path(expect_dir).resolve()):
        problems.append(f"batched imported from {location}, expected under {expect_dir}")
    if impl == "ours" and not has_core:
        problems.append("batched._core is missing: this is not the Rust implementation")
    if impl == "ref" and has_core:
        problems.append("batched._core exists: this is not the pure-Python reference")
    version = getattr(batched, "__version__", None)
    if version is None:
        from importlib import metadata

        with contextlib.suppress(metadata.PackageNotFoundError):
            version = metadata.version("batched")
    if impl == "ref" and version != REF_VERSION:
        problems.append(f"reference reports version {version}, expected {REF_VERSION}")
    if problems:
        raise RuntimeError("; ".join(problems))
    return {
        "batched_file": str(location),
        "batched_version": version,
        "has_core": has_core,
        "python": sys.version.split()[0],
        "executable": sys.executable,
    }


# --------------------------------------------------------------------------------------------
# Running worker children
# --------------------------------------------------------------------------------------------


def run_worker(
    script: Path | str, impl: str, payload: dict[str, Any], timeout_s: float
) -> dict[str, Any]:
    """Runs ``script --worker impl <payload-json>`` in ``impl``'s interpreter.

    The child must print its result as one JSON object on the last line of stdout. Failures
    (non-zero exit, timeout, unparsable output) come back as ``{"error": ..., "stderr": ...}``
    rather than raising, so that one broken scenario does not hide the others.
    """
    env = dict(os.environ)
    if impl == "ref":
        env.pop("PYTHONPATH", None)  # must not put our package in front of the reference
    cmd = [str(worker_python(impl)), str(script), "--worker", impl, json.dumps(payload)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=REPO_ROOT
        )
    except subprocess.TimeoutExpired as exc:
        stderr = (
            exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        )
        return {"error": f"worker timed out after {timeout_s:.0f} s", "stderr": _tail(stderr)}
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        return {
            "error": f"worker exited with status {proc.returncode}",
            "stderr": _tail(proc.stderr),
            "stdout": _tail(proc.stdout),
        }
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": "worker printed no JSON result", "stdout": _tail(proc.stdout)}
    if proc.stderr.strip():
        result.setdefault("stderr", _tail(proc.stderr))
    return result


def combine_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Merges repeated worker results: each numeric metric becomes the median over the runs.

    One run comes back as it is. With several, any error makes the whole an error (the runs
    are kept under ``runs``), since a median over the survivors would hide a failure.
    """
    if len(runs) == 1:
        return runs[0]
    failed = [r for r in runs if "error" in r]
    if failed:
        return {**failed[0], "runs": runs}
    keys = [
        k
        for k, v in runs[0]["metrics"].items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    ]
    metrics = {
        k: percentile([r["metrics"][k] for r in runs if is_number(r["metrics"].get(k))], 50)
        for k in keys
    }
    return {
        "impl": runs[0].get("impl"),
        "info": runs[0].get("info"),
        "metrics": metrics,
        "aggregate": "median",
        "runs": runs,
    }


def _tail(text: str | None, limit: int = 4000) -> str:
    text = text or ""
    return text if len(text) <= limit else "...\n" + text[-limit:]


def emit_result(result: dict[str, Any]) -> None:
    """Child side: the one line the parent reads."""
    sys.stdout.write(json.dumps(result, allow_nan=True) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method); ``q`` in 0..100."""
    if not values:
        return math.nan
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p99/mean/max of latencies given in seconds, reported in microseconds."""
    if not seconds:
        return {
            "n": 0,
            "p50_us": math.nan,
            "p99_us": math.nan,
            "mean_us": math.nan,
            "max_us": math.nan,
        }
    data = sorted(seconds)
    return {
        "n": len(data),
        "p50_us": percentile(data, 50) * 1e6,
        "p99_us": percentile(data, 99) * 1e6,
        "mean_us": sum(data) / len(data) * 1e6,
        "max_us": data[-1] * 1e6,
    }


def thread_ctx_switches() -> dict[int, tuple[int, int]]:
    """(voluntary, nonvoluntary) context switches of every thread of this process, by tid.

    Linux only (reads /proc/self/task/*/status); returns an empty dict elsewhere.
    """
    out: dict[int, tuple[int, int]] = {}
    task_dir = Path("/proc/self/task")
    if not task_dir.is_dir():
        return out
    for entry in task_dir.iterdir():
        vol = nonvol = None
        try:
            with open(entry / "status") as handle:
                for line in handle:
                    if line.startswith("voluntary_ctxt_switches:"):
                        vol = int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        nonvol = int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended while we looked
        if vol is not None and nonvol is not None:
            out[int(entry.name)] = (vol, nonvol)
    return out


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def fmt_num(value: object, digits: int | None = None) -> str:
    """Compact human formatting: thousands separators, fewer decimals for bigger values."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if digits is None:
        magnitude = abs(float(value))  # type: ignore[arg-type]
        digits = 0 if magnitude >= 100 else 1 if magnitude >= 10 else 2 if magnitude >= 1 else 3
    return f"{value:,.{digits}f}"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "—"
    if math.isinf(value):
        return "∞"
    if math.isnan(value):
        return "nan"
    return f"{value:.2f}x" if value < 100 else f"{value:,.0f}x"


def gain(ours: object, ref: object, higher_is_better: bool) -> float | None:
    """How many times better ``ours`` is than ``ref`` (>1: ours better), or None."""
    if not (is_number(ours) and is_number(ref)):
        return None
    num, den = (ours, ref) if higher_is_better else (ref, ours)
    if den == 0:
        return math.inf if num > 0 else None  # type: ignore[operator]
    return float(num) / float(den)  # type: ignore[arg-type]


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str] | None = None
) -> str:
    """A markdown table padded for reading as plain text; ``align`` items are 'l' or 'r'."""
    align = list(align) if align else ["l"] * len(headers)
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.rjust(w) if a == "r" else c.ljust(w)
            for c, w, a in zip(cells, widths, align, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2))
            for w, a in zip(widths, align, strict=True)
        )
        + "|"
    )
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    with contextlib.suppress(OSError):
        info["loadavg"] = os.getloadavg()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        info["git_dirty"] = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
    return info


def _json_default(value: object) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _clean(value: Any) -> Any:
    """Strict JSON: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def add_report_arguments(
    parser: argparse.ArgumentParser,
    name: str,
    *,
    repeat_help: str | None = None,
    strict_help: str | None = "exit 1 when a target is missed or a case fails",
) -> None:
    """The options every benchmark's report takes: ``--json`` and ``--md`` (a bare name goes to
    benches/results/), ``--strict`` unless ``strict_help`` is None (a script without targets),
    and, given ``repeat_help``, ``--repeat N``."""
    where = "(a bare name goes to benches/results/)"
    parser.add_argument("--json", default=f"{name}.json", help=f"output file {where}")
    parser.add_argument("--md", default=f"{name}.md", help=f"markdown report file {where}")
    if repeat_help is not None:
        parser.add_argument("--repeat", type=int, default=1, metavar="N", help=repeat_help)
    if strict_help is not None:
        parser.add_argument("--strict", action="store_true", help=strict_help)


def at_least(parser: argparse.ArgumentParser, option: str, value: int | None, low: int) -> None:
    """Exits with a usage error when ``option`` was given below ``low``."""
    if value is not None and value < low:
        parser.error(f"{option} must be at least {low}")


def results_path(name_or_path: str | Path) -> Path:
    """``benches/results/<name>`` for a bare file name, else the path as given."""
    path = Path(name_or_path)
    if not path.is_absolute() and path.parent == Path("."):
        path = RESULTS_DIR / path
    return path


def write_text(name_or_path: str | Path, text: str) -> Path:
    """Writes ``text`` to ``benches/results/<name>`` (or to a given path); returns the path."""
    path = results_path(name_or_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_json(name_or_path: str | Path, data: Any) -> Path:
    """Writes ``data`` to ``benches/results/<name>`` (or to a given path); returns the path."""
    return write_text(
        name_or_path, json.dumps(_clean(data), indent=2, default=_json_default) + "\n"
    )


# --------------------------------------------------------------------------------------------
# Added for embed.py and serve.py: long-running workers and what else used the machine
# --------------------------------------------------------------------------------------------


def spawn_worker(
    script: Path | str, impl: str, args: Sequence[str], log_file: Path
) -> subprocess.Popen[bytes]:
    """Starts ``script <args>`` in ``impl``'s interpreter without waiting for it (a server, say),
    stdout and stderr going to ``log_file``; the same environment rules as ``run_worker``."""
    env = dict(os.environ)
    if impl == "ref":
        env.pop("PYTHONPATH", None)  # must not put our package in front of the reference
    with open(log_file, "wb") as log_handle:
        return subprocess.Popen(
            [str(worker_python(impl)), str(script), *args],
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO_ROOT,
        )


def machine_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot, counting time the hypervisor
    stole from it (Linux /proc/stat; nan elsewhere). Set against a case's own CPU time over
    the same interval, it shows how much else competed with the case for the cores."""
    try:
        with open("/proc/stat") as handle:
            ticks = [int(x) for x in handle.readline().split()[1:9]]
    except (OSError, ValueError):
        return math.nan
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` (Linux /proc; nan elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def combine_quiet_runs(runs: list[dict[str, Any]], max_other_cpu: float) -> dict[str, Any]:
    """``combine_runs`` over the runs during which the rest of the machine kept at most
    ``max_other_cpu`` cores busy (metric ``other_cpu``), or over all of them when none was
    that quiet. On a shared machine a few busy neighbours can halve a case's throughput; the
    runs they disturbed say more about the neighbours than about the case. The result counts
    the runs kept under ``quiet_runs`` (0: all of them were kept)."""
    if any("error" in r for r in runs):
        return combine_runs(runs)  # a failure must show, however quiet the other runs were
    quiet = [
        r
        for r in runs
        if is_number(r["metrics"].get("other_cpu")) and r["metrics"]["other_cpu"] <= max_other_cpu
    ]
    return {**combine_runs(quiet or runs), "quiet_runs": len(quiet)}


# --------------------------------------------------------------------------------------------
# Entry points and targets shared by the benchmark scripts
# --------------------------------------------------------------------------------------------


def worker_entry(
    argv: list[str], script: Path, worker_main: Callable[[str, str], int]
) -> int | None:
    """Runs the child side when ``argv`` is ``--worker <impl> <case-json>`` (how ``run_worker``
    starts a script again) and returns its exit status; None for a parent's command line."""
    if argv[:1] != ["--worker"]:
        return None
    if len(argv) != 3:
        print(f"usage: {script.name} --worker <impl> <case-json>", file=sys.stderr)
        return 2
    return worker_main(argv[1], argv[2])


@dataclass
class Target:
    """One of an issue's targets, checked against a run's figures."""

    name: str
    ok: bool | None  # None: could not be evaluated, or meaningless (the detail says why)
    detail: str


def targets_markdown(targets: Sequence[Target]) -> list[str]:
    """The "Targets" section of a report: one PASS / FAIL / N/A line per target."""
    lines = ["", "### Targets", ""]
    for target in targets:
        mark = "PASS" if target.ok else "FAIL" if target.ok is False else "N/A "
        lines.append(f"- {mark}  {target.name}: {target.detail}")
    return lines
