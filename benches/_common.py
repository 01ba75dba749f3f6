"""Shared helpers for the benchmark scripts in this directory.

Nothing here imports ``batched``, numpy or torch: the parent and every worker child import
this module, including children running the pure-Python reference in its own venv. It holds
the reference venv (``batched==0.1.5`` from PyPI, created on first use), running a case in a
child of either interpreter, timing helpers, and the options, tables and files every
benchmark's report shares.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import faulthandler
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import sysconfig
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

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


def expected_locations(impls: Sequence[str]) -> dict[str, str]:
    """``expected_location`` of each implementation (creating the reference venv if needed)."""
    out = {}
    for impl in sorted(set(impls)):
        out[impl] = expected_location(impl)
        log(f"[setup] {impl}: {worker_python(impl)} (batched under {out[impl]})")
    return out


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


def _env(impl: str) -> dict[str, str]:
    env = dict(os.environ)
    if impl == "ref":
        env.pop("PYTHONPATH", None)  # must not put our package in front of the reference
    return env


def run_worker(
    script: Path | str, impl: str, payload: dict[str, Any], timeout_s: float
) -> dict[str, Any]:
    """Runs ``script --worker impl <payload-json>`` in ``impl``'s interpreter.

    The child must print its result as one JSON object on the last line of stdout. Failures
    (non-zero exit, timeout, unparsable output) come back as ``{"error": ..., "stderr": ...}``
    rather than raising, so that one broken scenario does not hide the others.
    """
    cmd = [str(worker_python(impl)), str(script), "--worker", impl, json.dumps(payload)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_s, env=_env(impl), cwd=REPO_ROOT
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


Measure = Callable[[dict[str, Any]], dict[str, Any]]


def child_main(impl: str, payload_json: str, measure: Measure) -> int:
    """Child side of ``run_worker``: checks the implementation (unless the payload says the
    case does not use ``batched``), runs ``measure(payload)`` under a watchdog and emits
    its metrics."""
    payload = json.loads(payload_json)
    # A hang must end with stacks on stderr, not with the parent's blunt timeout.
    faulthandler.dump_traceback_later(payload["watchdog_s"], exit=True)
    uses_batched = payload.get("uses_batched", True)
    info = verify_impl(impl, payload.get("expect_dir")) if uses_batched else None
    started = time.perf_counter()
    metrics = measure(payload)
    faulthandler.cancel_dump_traceback_later()
    wall = time.perf_counter() - started
    emit_result({"impl": impl, "info": info, "metrics": metrics, "scenario_wall_s": wall})
    return 0


def worker_entry(argv: list[str], script: Path, measure: Measure) -> int | None:
    """Runs the child side (``child_main``) when ``argv`` is ``--worker <impl> <case-json>``,
    as ``run_worker`` starts a script again, and returns its exit status; None for a parent's
    command line."""
    if argv[:1] != ["--worker"]:
        return None
    if len(argv) != 3:
        print(f"usage: {script.name} --worker <impl> <case-json>", file=sys.stderr)
        return 2
    return child_main(argv[1], argv[2], measure)


def spawn_worker(
    script: Path | str, impl: str, args: Sequence[str], log_file: Path
) -> subprocess.Popen[bytes]:
    """Starts ``script <args>`` in ``impl``'s interpreter without waiting for it (a server, say),
    stdout and stderr going to ``log_file``; the same environment rules as ``run_worker``."""
    with open(log_file, "wb") as log_handle:
        return subprocess.Popen(
            [str(worker_python(impl)), str(script), *args],
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            env=_env(impl),
            cwd=REPO_ROOT,
        )


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


Mark = TypeVar("Mark")


class CallerThreads:
    """``n`` caller threads for a measured window. Each runs ``caller(k)``, which waits on
    ``start``, then calls while ``running[0]``, appending each call's completion time and
    latency to ``ends[k]`` and ``lats[k]`` and any failure to ``errors``."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.running = [True]
        self.start = threading.Barrier(n + 1)
        self.ends: list[array[float]] = [array("d") for _ in range(n)]
        self.lats: list[array[float]] = [array("d") for _ in range(n)]
        self.errors: list[str] = []

    def run(
        self, caller: Callable[[int], None], p: dict[str, Any], mark: Callable[[], Mark]
    ) -> tuple[Mark, Mark, int]:
        """Releases the callers, takes ``mark()`` after ``p["warmup_s"]`` and again
        ``p["duration_s"]`` later, stops them; returns both marks and how many callers were
        still blocked ``p["join_s"]`` after the stop."""
        workers = [threading.Thread(target=caller, args=(k,), daemon=True) for k in range(self.n)]
        for w in workers:
            w.start()
        self.start.wait()
        time.sleep(p["warmup_s"])
        first = mark()
        time.sleep(p["duration_s"])
        last = mark()
        self.running[0] = False
        deadline = time.monotonic() + p["join_s"]
        for w in workers:
            w.join(max(0.0, deadline - time.monotonic()))
        return first, last, sum(w.is_alive() for w in workers)

    def window(self, start: float, end: float) -> list[float]:
        return completed_between(self.ends, self.lats, start, end)


def completed_between(
    ends: Sequence[Sequence[float]], lats: Sequence[Sequence[float]], start: float, end: float
) -> list[float]:
    """Latencies of the calls that completed between ``start`` and ``end``, from each caller's
    completion times (``ends``) and latencies (``lats``)."""
    return [
        lat
        for e_arr, l_arr in zip(ends, lats, strict=True)
        for e, lat in zip(e_arr, l_arr, strict=True)
        if start <= e <= end
    ]


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


def combine_quiet_runs(runs: list[dict[str, Any]], max_other_cpu: float) -> dict[str, Any]:
    """``combine_runs`` over the runs during which the rest of the machine kept at most
    ``max_other_cpu`` cores busy (metric ``other_cpu``), or over all of them when none was
    that quiet: on a shared machine, runs that busy neighbours slowed say more about the
    neighbours than about the case. The result counts the runs kept under ``quiet_runs``
    (0: all of them were kept)."""
    if any("error" in r for r in runs):
        return combine_runs(runs)  # a failure must show, however quiet the other runs were
    quiet = [
        r
        for r in runs
        if is_number(r["metrics"].get("other_cpu")) and r["metrics"]["other_cpu"] <= max_other_cpu
    ]
    return {**combine_runs(quiet or runs), "quiet_runs": len(quiet)}


class BenchError(AssertionError):
    """A wrong result, a stuck caller or a server that would not come up: a bug to report,
    not a number."""


def shut(processor: Any) -> None:
    """Shuts a processor down, where its implementation has a ``shutdown``."""
    shutdown = getattr(processor, "shutdown", None)
    if shutdown is not None:
        shutdown()


def impl_stats(processor: Any) -> dict[str, Any]:
    """The processor's own statistics, whatever fields this implementation has, for the JSON."""
    try:
        stats = processor.stats
        if hasattr(stats, "as_dict"):  # this package's BatchStats
            fields = stats.as_dict()
        elif hasattr(stats, "__dict__"):  # 0.1.5's
            fields = vars(stats)
        else:
            fields = {name: getattr(stats, name) for name in getattr(stats, "__slots__", ())}
    except Exception as exc:  # best effort: the two versions have different stats
        return {"unavailable": f"{type(exc).__name__}: {exc}"}
    return {k: v for k, v in fields.items() if isinstance(v, int | float | str | bool | type(None))}


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def metric(result: dict[str, Any] | None, key: str) -> Any:
    """One metric of a (combined) worker result; None when it failed or did not run."""
    if not result or "error" in result:
        return None
    return result["metrics"].get(key)


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
    """A markdown table padded for reading as plain text; ``align`` items are 'l' or 'r'
    (default: the first column left, the others right)."""
    align = list(align) if align else ["l", *("r" for _ in headers[1:])]
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


def machine_line(machine: dict[str, Any]) -> str:
    """The report's first line about the machine (the JSON also records the commit)."""
    return (
        f"Machine: {machine.get('cpus')} CPUs, Python {machine.get('python')}, "
        f"{machine.get('platform')}"
    )


def errors_markdown(failures: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    """The "Errors" section of a report: each failed case's error and its output."""
    if not failures:
        return []
    out = ["", "### Errors", ""]
    for name, result in failures:
        out.append(f"- {name}: {result['error']}")
        out += [f"  - {detail}" for detail in result.get("details", [])]
        for key in ("stderr", "stdout"):
            if result.get(key):
                out.append(f"  {key}:\n```\n{result[key].rstrip()}\n```")
    return out


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


def write_results(
    args: argparse.Namespace, report: str, data: dict[str, Any] | None, *more: str
) -> None:
    """Prints the markdown report and writes it to ``--md``, ``data`` (unless None) to
    ``--json``; ``more`` are lines about further files written."""
    print(report, end="")
    lines = [f"Markdown: {write_text(args.md, report)}"]
    if data is not None:
        lines.append(f"JSON: {write_json(args.json, data)}")
    print("\n" + "\n".join([*lines, *more]))


# --------------------------------------------------------------------------------------------
# Command lines
# --------------------------------------------------------------------------------------------


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return parse


def make_parser(doc: str | None, quick_help: str, full_help: str) -> argparse.ArgumentParser:
    """A benchmark's parser: its docstring's first paragraph as the description, and the
    ``--quick`` (the default) / ``--full`` choice of run length."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--quick", action="store_true", help=f"{quick_help} (the default)")
    length.add_argument("--full", action="store_true", help=full_help)
    return parser


def add_report_arguments(
    parser: argparse.ArgumentParser, name: str, *, repeat_help: str | None = None
) -> None:
    """The options every benchmark's report takes: ``--json`` and ``--md`` (a bare name goes to
    benches/results/), ``--strict``, and, given ``repeat_help``, ``--repeat N``."""
    where = "(a bare name goes to benches/results/)"
    parser.add_argument("--json", default=f"{name}.json", help=f"results file {where}")
    parser.add_argument("--md", default=f"{name}.md", help=f"markdown report file {where}")
    if repeat_help is not None:
        parser.add_argument(
            "--repeat", type=whole_number(1), default=1, metavar="N", help=repeat_help
        )
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 when any case failed"
    )


def exit_status(args: argparse.Namespace, failed: bool) -> int:
    """1 when a case failed and ``--strict`` was given, else 0."""
    return 1 if args.strict and failed else 0
