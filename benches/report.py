"""One command for every benchmark: runs them, draws the chart and writes the tables.

    python benches/report.py              # the short runs (the default)
    python benches/report.py --full       # the longer runs of every benchmark
    python benches/report.py --only embed --only serve    # run these, redraw from all results
    python benches/report.py --no-run     # only redraw the chart and the README tables

It runs ``overhead.py``, ``padding.py``, ``embed.py`` and ``serve.py`` one after another, each
as its own process (which starts a fresh interpreter per case), ``--full`` passed through. Each
writes its markdown report and JSON into ``benches/results/``. From those JSON files, whether
fresh or from an earlier run, this script then

* draws ``benches/results/benchmarks.png`` (matplotlib, Agg backend): the implementations side
  by side for every benchmark;
* writes ``benches/README.md``: what each benchmark does, how to run it, and every table;
* rewrites the part of ``README.md`` between ``<!-- bench:begin -->`` and
  ``<!-- bench:end -->``: the chart and a short table of headline ratios.

Both show exactly what the last run measured.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import embed
import serve

README = C.REPO_ROOT / "README.md"
BENCH_README = C.BENCH_DIR / "README.md"
CHART = C.RESULTS_DIR / "benchmarks.png"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

# The benchmarks this script runs; load.py and adaptive.py take too long and run alone.
BENCHES = ("overhead", "padding", "embed", "serve")

OURS_COLOR, REF_COLOR, BASE_COLOR, IDEAL_COLOR = "#1f77b4", "#9a9a9a", "#d9a441", "#2ca02c"


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


def run_benches(names: Sequence[str], full: bool) -> list[str]:
    """Runs each benchmark script in turn; returns the names of those that failed."""
    failed = []
    for name in names:
        cmd = [sys.executable, str(C.BENCH_DIR / f"{name}.py")]
        cmd += ["--full"] if full else []
        C.log(f"[report] {' '.join(cmd[1:])}")
        started = time.perf_counter()
        status = subprocess.run(cmd, cwd=C.REPO_ROOT, check=False).returncode
        C.log(f"[report] {name}: exit {status} after {time.perf_counter() - started:.0f} s")
        if status != 0:
            failed.append(name)
    return failed


def load_results() -> dict[str, dict[str, Any]]:
    """Every benchmark's JSON results that exist, by benchmark name."""
    out = {}
    for name in BENCHES:
        path = C.results_path(f"{name}.json")
        if path.exists():
            out[name] = json.loads(path.read_text(encoding="utf-8"))
        else:
            C.log(f"[report] no {path}: {name} left out of the chart and the README")
    return out


# --------------------------------------------------------------------------------------------
# Reading the results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of the overhead-and-padding table: a metric for ours and for 0.1.5."""

    label: str
    ours: float | None
    ref: float | None
    digits: int | None = None
    ratio: bool = True
    chart: bool = False  # a throughput drawn in the chart's overhead panel


def overhead_metric(data: dict[str, Any], case_id: str, impl: str, key: str) -> float | None:
    for case in data.get("cases", []):
        if case["id"] == case_id:
            metrics = case["results"].get(impl, {}).get("metrics", {})
            value = metrics.get(key)
            return float(value) if C.is_number(value) else None
    return None


@dataclass(frozen=True)
class Pick:
    """An overhead.py case and metric that the README shows."""

    case_id: str
    key: str
    label: str
    digits: int = 0
    ratio: bool = True
    chart: bool = False


OVERHEAD_PICKS = (
    Pick("threads64_t5", "items_per_s", "64 threads, items/s", chart=True),
    Pick("threads64_t5", "cpu_us_per_item", "64 threads, CPU µs per item", digits=1),
    Pick(
        "threads64_t5",
        "ring_handoffs_per_s",
        "floor: 64 bare threads passing a token round a ring, hand-offs/s",
        ratio=False,
    ),
    Pick(
        "threads64_t5",
        "ring_cpu_us",
        "floor: CPU µs per hand-off of that ring",
        digits=1,
        ratio=False,
    ),
    Pick("big_list_100k", "items_per_s", "one call with a 100 000-item list, items/s", chart=True),
    Pick("idle", "wakeups_per_s", "idle processor, wake-ups/s", ratio=False),
    Pick("lone", "excess_p50_us", "lone caller, p50 latency minus timeout_ms, µs", ratio=False),
    Pick("lone", "sleep_overshoot_p50_us", "a bare sleep(5 ms) overshoots by, µs", ratio=False),
    Pick(
        "aio_async_tasks1000",
        "items_per_s",
        "asyncio, 1 000 tasks, `async def`, items/s",
        chart=True,
    ),
    Pick("aio_def_tasks1000", "items_per_s", "asyncio, 1 000 tasks, `def`, items/s", chart=True),
    Pick("aio_async_tasks1000", "p99_us", "asyncio, 1 000 tasks, `async def`, p99 µs"),
    Pick("aio_def_tasks1000", "p99_us", "asyncio, 1 000 tasks, `def`, p99 µs"),
    Pick(
        "aio_big_list_100k",
        "items_per_s",
        "asyncio, await of a 100 000-item list, items/s",
        chart=True,
    ),
    Pick("aio_idle_async", "wakeups_per_s", "asyncio idle processor, wake-ups/s", ratio=False),
)


def overhead_rows(data: dict[str, Any]) -> list[Row]:
    """The picked overhead rows present in this run (a case that was not run is left out)."""
    rows = []
    for pick in OVERHEAD_PICKS:
        ours, ref = (overhead_metric(data, pick.case_id, impl, pick.key) for impl in C.IMPLS)
        if ours is not None or ref is not None:
            rows.append(Row(pick.label, ours, ref, pick.digits, pick.ratio, pick.chart))
    return rows


def padding_rows(data: dict[str, Any]) -> list[Row]:
    """Items/s and padded fraction of every length-aware variant against 0.1.5, per library."""
    cases = data.get("cases", [])
    refs = {c["lib"]: c for c in cases if c["impl"] == "ref"}
    rows = []
    for case in cases:
        ref = refs.get(case["lib"])
        if case["impl"] == "ref" or ref is None:
            continue
        for key, what, digits in (("items_per_s", "items/s", 0), ("padded_fraction", "padded", 3)):
            ours, theirs = (_padding_metric(c, key) for c in (case, ref))
            label = f"padding, {case['lib']}, {case['label'].removeprefix('ours, ')}: {what}"
            rows.append(Row(label, ours, theirs, digits, key == "items_per_s", chart=False))
    return rows


def _padding_metric(case: dict[str, Any], key: str) -> float | None:
    value = (case.get("result") or {}).get("metrics", {}).get(key)
    return float(value) if C.is_number(value) else None


def embed_results(data: dict[str, Any]) -> tuple[list[embed.Case], embed.Results]:
    """embed.py's cases and results, rebuilt from its JSON so that its own table renders."""
    cases = [
        embed.Case(c["id"], c["label"], c["impl"], c["mode"], c["length_aware"])
        for c in data["cases"]
    ]
    results = embed.Results(
        runs={c["id"]: c["runs"] for c in data["cases"]},
        combined={c["id"]: c["result"] for c in data["cases"]},
    )
    return cases, results


def serve_results(data: dict[str, Any]) -> tuple[list[serve.Variant], serve.Results]:
    """serve.py's variants and results, rebuilt from its JSON so that its own table renders."""
    variants = [
        serve.Variant(
            v["id"], v["label"], v["impl"], v["batching"], v["length_aware"], v.get("peer")
        )
        for v in data["variants"]
    ]
    return variants, serve.Results({v["id"]: v["runs"] for v in data["variants"]})


# --------------------------------------------------------------------------------------------
# The README
# --------------------------------------------------------------------------------------------


def rows_table(rows: Sequence[Row]) -> str:
    headers = [
        "scenario (batch_size 32, timeout_ms 5)",
        "batched",
        C.REF_VERSION,
        f"÷ {C.REF_VERSION}",
    ]
    cells = [
        [
            r.label,
            C.fmt_num(r.ours, r.digits),
            C.fmt_num(r.ref, r.digits),
            C.fmt_ratio(C.gain(r.ours, r.ref, True)) if r.ratio else "",
        ]
        for r in rows
    ]
    return C.markdown_table(headers, cells)


def run_line(results: dict[str, dict[str, Any]]) -> str:
    """The machine, once, and which run (the quick or the full one) each table comes from."""
    machines = {
        (m.get("cpus"), m.get("python")) for m in (d.get("machine", {}) for d in results.values())
    }
    where = "; ".join(f"{cpus} CPUs, Python {python}" for cpus, python in sorted(machines))
    runs = "; ".join(f"{name}: {data.get('profile')} run" for name, data in results.items())
    return f"Machine: {where}. Runs: {runs}."


QUIET_NOTE = (
    "Other CPU: cores that the rest of the machine kept busy meanwhile; quiet runs k/n: the "
    f"medians come from the k runs with other CPU at most {embed.MAX_OTHER_CPU:g} (from all n "
    "when k is 0)."
)


# The asyncio task cases that overhead.py also runs on the floor and on Ray Serve, and what
# of them the README shows: (case, metric key, label, digits, higher is better).
PEER_CASES = (("aio_async_tasks1000", "`async def`"), ("aio_def_tasks1000", "`def`"))
PEER_METRICS = (
    ("items_per_s", "items/s", 0, True),
    ("p99_us", "p99 µs", 0, False),
    ("cpu_us_per_item", "CPU µs/item", 1, False),
)
PEER_LABELS = {"floor": "floor", "ray": "Ray Serve `@serve.batch`"}


def peers_table(data: dict[str, Any]) -> str | None:
    """The asyncio task cases beside the floor and Ray Serve: each peer's figure and ours
    relative to it (items/s: ours/peer; times and CPU: ours/peer as well, so < 1 is better)."""
    cells = []
    for case_id, what in PEER_CASES:
        for key, label, digits, _higher in PEER_METRICS:
            ours = overhead_metric(data, case_id, "ours", key)
            if ours is None:
                continue
            row = [f"asyncio, 1 000 tasks, {what}, {label}", C.fmt_num(ours, digits)]
            for peer in PEER_LABELS:
                theirs = overhead_metric(data, case_id, peer, key)
                ratio = ours / theirs if theirs else None
                row += [C.fmt_num(theirs, digits), "" if ratio is None else f"{ratio:.2f}x"]
            cells.append(row)
    if not cells:
        return None
    headers = ["scenario (batch_size 32, timeout_ms 5)", "batched"]
    for label in PEER_LABELS.values():
        headers += [label, "batched / it"]
    return C.markdown_table(headers, cells)


def overhead_section(results: dict[str, dict[str, Any]]) -> list[str]:
    rows = overhead_rows(results.get("overhead", {})) + padding_rows(results.get("padding", {}))
    if not rows:
        return []
    out = ["", "### Overhead and padding (trivial and simulated models)", "", rows_table(rows)]
    peers = peers_table(results.get("overhead", {}))
    if peers is not None:
        out += [
            "",
            "### asyncio against its floor and Ray Serve",
            "",
            "The floor is the least a batcher on one event loop can do (`benches/_floor.py`: "
            "one list, one `call_later`, one future per call; a plain `def` through "
            "`run_in_executor`). Ray Serve's `@serve.batch` runs outside a deployment "
            "(`benches/_ray_batch.py`). Same run as the table above.",
            "",
            peers,
        ]
    return out


def embed_section(data: dict[str, Any]) -> list[str]:
    cases, results = embed_results(data)
    s = data["settings"]
    return [
        "",
        "### all-MiniLM-L6-v2 on the CPU, in one process",
        "",
        f"{s['sentences']:,} sentences of {embed.MIN_WORDS}..{embed.MAX_WORDS} words; "
        f"(b) and (c) with `batch_size={s['batch_size']}`, (d) with "
        f"`batch_size={s.get('task_batch_size', s['batch_size'])}`, all with "
        f"`timeout_ms={s['timeout_ms']:g}`; "
        f"(c) and (d) with `sort_by_length=True, length_fn={s.get('length_fn', 'len')}`; "
        f"`torch.set_num_threads({s['torch_threads']})`; medians of {data['rounds']} "
        "interleaved rounds. " + QUIET_NOTE,
        "",
        embed.render_table(cases, results),
    ]


def serve_section(data: dict[str, Any]) -> list[str]:
    variants, results = serve_results(data)
    s = data["settings"]
    rounds = data["rounds"]
    return [
        "",
        "### The same model behind FastAPI and uvicorn",
        "",
        f"{s['sentences']:,} requests, {s['tasks']} concurrent httpx clients on loopback; "
        f"medians of {rounds} round{'s' if rounds > 1 else ''}. " + QUIET_NOTE,
        "",
        serve.render_table(variants, results),
    ]


@dataclass(frozen=True)
class Headline:
    """One row of the README's table: this package's figure and what it is measured against."""

    label: str
    ours: float | None
    floor: float | None = None
    ref: float | None = None
    ray: float | None = None
    digits: int = 0


def _ratio(ours: float | None, other: float | None) -> str:
    return C.fmt_ratio(C.gain(ours, other, True))


def headline_rows(results: dict[str, dict[str, Any]]) -> list[Headline]:
    """The figures a user compares first, from whichever benchmarks have results."""
    rows: list[Headline] = []
    over = results.get("overhead", {})

    def metric(case_id: str, impl: str, key: str) -> float | None:
        return overhead_metric(over, case_id, impl, key)

    if over:
        rows.append(
            Headline(
                "64 threads, items/s",
                metric("threads64_t5", "ours", "items_per_s"),
                floor=metric("threads64_t5", "ours", "ring_handoffs_per_s"),
                ref=metric("threads64_t5", "ref", "items_per_s"),
            )
        )
        for case_id, what in PEER_CASES:
            rows.append(
                Headline(
                    f"asyncio, 1 000 tasks, {what}, items/s",
                    metric(case_id, "ours", "items_per_s"),
                    floor=metric(case_id, "floor", "items_per_s"),
                    ref=metric(case_id, "ref", "items_per_s"),
                    ray=metric(case_id, "ray", "items_per_s"),
                )
            )
        rows.append(
            Headline(
                "one call with a 100 000-item list, items/s",
                metric("big_list_100k", "ours", "items_per_s"),
                ref=metric("big_list_100k", "ref", "items_per_s"),
            )
        )
    padding = {(c["lib"], c["variant"]): c for c in results.get("padding", {}).get("cases", [])}
    for lib in ("torch", "numpy"):
        ours, ref = padding.get((lib, "sort_budget")), padding.get((lib, "ref"))
        if ours and ref:
            rows.append(
                Headline(
                    f"padding, {lib}, `sort_by_length` + `max_batch_tokens`, items/s",
                    _padding_metric(ours, "items_per_s"),
                    ref=_padding_metric(ref, "items_per_s"),
                )
            )
    if "embed" in results:
        _, embedded = embed_results(results["embed"])
        rows.append(
            Headline(
                "all-MiniLM-L6-v2, 256 asyncio tasks, sentences/s (floor: one direct call)",
                embedded.metric("asyncio", "sentences_per_s"),
                floor=embedded.metric("ideal", "sentences_per_s"),
                ref=embedded.metric("ref", "sentences_per_s"),
                digits=1,
            )
        )
    if "serve" in results:
        _, served = serve_results(results["serve"])
        rows.append(
            Headline(
                "the model behind FastAPI, requests/s",
                served.metric("ours", "requests_per_s"),
                ref=served.metric("ref", "requests_per_s"),
                digits=1,
            )
        )
    return rows


def headline_table(rows: Sequence[Headline]) -> str:
    headers = [
        "throughput (higher is better)",
        "batched",
        "floor",
        C.REF_VERSION,
        "Ray Serve",
        "÷ floor",
        f"÷ {C.REF_VERSION}",
        "÷ Ray Serve",
    ]
    cells = [
        [
            r.label,
            C.fmt_num(r.ours, r.digits),
            C.fmt_num(r.floor, r.digits) if r.floor is not None else "",
            C.fmt_num(r.ref, r.digits) if r.ref is not None else "",
            C.fmt_num(r.ray, r.digits) if r.ray is not None else "",
            _ratio(r.ours, r.floor) if r.floor is not None else "",
            _ratio(r.ours, r.ref) if r.ref is not None else "",
            _ratio(r.ours, r.ray) if r.ray is not None else "",
        ]
        for r in rows
    ]
    return C.markdown_table(headers, cells)


def readme_block(results: dict[str, dict[str, Any]]) -> str:
    """The generated part of the README's benchmark section: the chart and the headlines."""
    return "\n".join(
        [
            "<!-- Written by benches/report.py (bash scripts/bench.sh); edits here are lost. -->",
            "",
            f"![Benchmark results: this package against batched {C.REF_VERSION}]"
            f"(benches/results/{CHART.name})",
            "",
            headline_table(headline_rows(results)),
        ]
    )


BENCH_README_INTRO = f"""# Benchmarks

Each benchmark compares this package with batched {C.REF_VERSION} (the pure-Python predecessor,
installed from PyPI into a venv of its own on first use) and, where one exists, with the floor:
the least the machine or the runtime needs for the same hand-offs with no batching library at
all. Every case runs in a fresh interpreter, the implementations alternate within one run, and
each ratio compares figures of the same run: on a shared or virtual machine, read the ratios
rather than the absolute numbers.

## Running them

From the repository root, `bash scripts/bench.sh` sets up the environment, runs `overhead.py`,
`padding.py`, `embed.py` and `serve.py` (through `benches/report.py`), redraws
`results/benchmarks.png` and rewrites this page and the README's table;
`bash scripts/bench.sh --full` runs the longer version of each. `python benches/report.py
--no-run` only redraws and rewrites them from the JSON results in `results/`.

Each script also runs alone and writes `results/<name>.md` and `results/<name>.json`;
`--help` lists its options, `--quick` (the default) and `--full` choose the run's length, and
`--strict` makes it exit with status 1 when any case failed.

* `overhead.py` (about 4 minutes): the cost of batching itself, with a trivial batch
  function: 1 to 64 threads, a 100 000-item list, an idle processor's wake-ups, a lone
  caller's latency past `timeout_ms`, and the same on asyncio. The 64-thread case's floor is
  64 bare Python threads passing a token round a ring; the asyncio task cases also run the
  floor (`_floor.py`) and Ray Serve's `@serve.batch` (`_ray_batch.py`).
  [Full report](results/overhead.md).
* `padding.py` (about 2 minutes): the inference flavour, 16 threads sending rows of 8..512
  tokens to a simulated model whose cost follows the padded size, with numpy and with torch:
  default, `sort_by_length`, and a token budget. `--lib torch --device cuda` puts the rows on
  the GPU. [Full report](results/padding.md).
* `embed.py` (about 4 minutes): all-MiniLM-L6-v2 through sentence-transformers, 1 024
  sentences of 5..60 words: (a) no batching, (b) {C.REF_VERSION}, (c) this package on 64
  threads, (d) on 256 asyncio tasks, and (e) the floor, one direct `encode` call over all the
  sentences. `--device cuda` runs the model on the GPU.
* `serve.py` (about 2 minutes): the same model in a FastAPI app under uvicorn, 64 concurrent
  httpx clients on loopback: no batching, {C.REF_VERSION}, this package and Ray Serve's
  `@serve.batch`.
* `load.py` (about half an hour, so `bench.sh` leaves it out): the same service under
  open-loop load, Poisson arrivals from a generator process. Each variant's capacity is found
  first, then every variant runs at 50%, 80% and 95% of the best capacity and at 80% of
  {C.REF_VERSION}'s, alternating within each round: p50 to p99.9 latency, the rate achieved,
  the failed share and how busy the model was.
  [Full report](results/load.md), [chart](results/load.png).
* `adaptive.py` (5 to 8 minutes): Poisson arrivals from 10 to 20 000 items/s against
  simulated models, fixed `timeout_ms` values against `"auto"` and {C.REF_VERSION}: p99
  latency and throughput at each rate. [Full report](results/adaptive.md).

`scripts/gpu_check.sh` is the GPU run, for a machine with CUDA: the CUDA tests, `padding.py`
with CUDA tensors and `embed.py` with the model on the GPU, results in `results/gpu/`.

The "other CPU" columns below say how many cores the rest of the machine kept busy during a
case.
"""


def bench_readme(results: dict[str, dict[str, Any]]) -> str:
    """benches/README.md: what the benchmarks do, then every table of the last run."""
    out = [
        "<!-- Written by benches/report.py (bash scripts/bench.sh); edits here are lost. -->",
        BENCH_README_INTRO,
        "## Results",
        "",
        run_line(results),
        "",
        "![Benchmark results](results/benchmarks.png)",
        *overhead_section(results),
    ]
    if "embed" in results:
        out += embed_section(results["embed"])
    if "serve" in results:
        out += serve_section(results["serve"])
    return "\n".join(out) + "\n"


def write_readme(block: str) -> None:
    """Replaces what lies between the markers; refuses to guess when they are missing."""
    text = README.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.DOTALL)
    if len(pattern.findall(text)) != 1:
        raise SystemExit(f"{README} needs exactly one {BEGIN} ... {END} block")
    README.write_text(pattern.sub(lambda _: f"{BEGIN}\n{block}\n{END}", text), encoding="utf-8")


# --------------------------------------------------------------------------------------------
# The chart
# --------------------------------------------------------------------------------------------


def wrap(label: str, width: int = 16) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(label.replace("`", ""), width))


def label_bars(ax: Any, bars: Any, texts: Sequence[str]) -> None:
    """Values above the bars, on white so that the grid behind them stays legible."""
    for text in ax.bar_label(bars, labels=list(texts), fontsize=7, padding=2):
        text.set_bbox({"facecolor": "white", "edgecolor": "none", "pad": 0.5})


def overhead_panel(ax: Any, data: dict[str, Any]) -> None:
    """Throughput of the call-overhead scenarios, ours beside 0.1.5, on a log scale."""
    rows = [r for r in overhead_rows(data) if r.chart]
    xs = range(len(rows))
    width = 0.38
    for offset, impl, color in ((-width / 2, "ours", OURS_COLOR), (width / 2, "ref", REF_COLOR)):
        values = [(r.ours if impl == "ours" else r.ref) or 0.0 for r in rows]
        bars = ax.bar(
            [x + offset for x in xs], values, width, color=color, label=C.IMPL_LABELS[impl]
        )
        label_bars(ax, bars, [C.fmt_num(v, 0) for v in values])
    ax.set_yscale("log")
    ax.set_xticks(list(xs), [wrap(r.label.removesuffix(", items/s")) for r in rows], fontsize=7)
    ax.set_ylabel("items/s (log scale)")
    ax.set_title("Call overhead, trivial batch function")
    ax.legend(fontsize=8)


def padding_panel(ax: Any, data: dict[str, Any]) -> None:
    """Items/s of 0.1.5 and of every variant of ours, grouped by library."""
    cases = data.get("cases", [])
    libs = list(dict.fromkeys(c["lib"] for c in cases))
    variants = list(dict.fromkeys(c["variant"] for c in cases))
    labels = {c["variant"]: c["label"] for c in cases}
    width = 0.8 / max(1, len(variants))
    blues = ["#aec7e8", "#6baed6", OURS_COLOR, "#08519c"]
    for k, variant in enumerate(variants):
        values = []
        for lib in libs:
            case: dict[str, Any] = next(
                (c for c in cases if c["lib"] == lib and c["variant"] == variant), {}
            )
            values.append(_padding_metric(case, "items_per_s") or 0.0)
        color = REF_COLOR if variant == "ref" else blues[k % len(blues)]
        xs = [i + (k - (len(variants) - 1) / 2) * width for i in range(len(libs))]
        bars = ax.bar(xs, values, width, color=color, label=wrap(labels[variant], 40))
        label_bars(ax, bars, [C.fmt_num(v, 0) for v in values])
    ax.set_xticks(range(len(libs)), libs)
    ax.set_ylabel("items/s")
    ax.set_title("Padding: 16 threads, rows of 8..512")
    ax.legend(fontsize=7)


def embed_panel(ax: Any, data: dict[str, Any]) -> None:
    """Sentences/s of cases (a) to (e), p99 on each bar."""
    cases, results = embed_results(data)
    colors = {"serial": BASE_COLOR, "ref": REF_COLOR, "ideal": IDEAL_COLOR}
    values = [results.metric(c.id, "sentences_per_s") or 0.0 for c in cases]
    bars = ax.bar(range(len(cases)), values, color=[colors.get(c.id, OURS_COLOR) for c in cases])
    texts = []
    for case, value in zip(cases, values, strict=True):
        p99 = results.metric(case.id, "p99_ms")
        what = "whole call" if case.mode == "ideal" else "p99"  # (e): every latency is the call
        texts.append(
            f"{value:.0f}\n{what} {p99 / 1e3:.1f} s" if C.is_number(p99) else f"{value:.0f}"
        )
    label_bars(ax, bars, texts)
    ax.set_xticks(range(len(cases)), [wrap(c.label, 14) for c in cases], fontsize=7)
    ax.set_ylabel("sentences/s")
    ax.set_ylim(0, max(values, default=1) * 1.3)
    ax.set_title("all-MiniLM-L6-v2 on the CPU, 1 024 sentences")


def serve_panel(ax: Any, data: dict[str, Any]) -> None:
    """Requests/s of the three FastAPI variants, p99 on each bar."""
    variants, results = serve_results(data)
    colors = {"plain": BASE_COLOR, "ref": REF_COLOR}
    values = [results.metric(v.id, "requests_per_s") or 0.0 for v in variants]
    bars = ax.bar(
        range(len(variants)), values, color=[colors.get(v.id, OURS_COLOR) for v in variants]
    )
    p99s = [results.metric(v.id, "p99_ms") for v in variants]
    texts = [
        f"{v:.0f}\np99 {p / 1e3:.1f} s" if C.is_number(p) else f"{v:.0f}"
        for v, p in zip(values, p99s, strict=True)
    ]
    label_bars(ax, bars, texts)
    ax.set_xticks(range(len(variants)), [wrap(v.label, 14) for v in variants], fontsize=7)
    ax.set_ylabel("requests/s")
    ax.set_ylim(0, max(values, default=1) * 1.3)
    ax.set_title("The model behind FastAPI, 64 concurrent clients")


PANELS: dict[str, Callable[[Any, dict[str, Any]], None]] = {
    "overhead": overhead_panel,
    "padding": padding_panel,
    "embed": embed_panel,
    "serve": serve_panel,
}


def draw_chart(results: dict[str, dict[str, Any]], path: Path) -> Path:
    """One panel per benchmark with results, two panels a row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name in PANELS if name in results]
    rows = (len(names) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(13, 4.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        PANELS[name](ax, results[name])
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(
        f"batched (blue) against batched {C.REF_VERSION} (grey), no batching (amber) and the "
        "ideal single call (green)"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="the longer run of every benchmark")
    parser.add_argument(
        "--only", action="append", choices=BENCHES, help="run only these benchmarks"
    )
    parser.add_argument(
        "--no-run", action="store_true", help="only redraw the chart and rewrite the tables"
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    failed = [] if args.no_run else run_benches(args.only or list(BENCHES), args.full)
    results = load_results()
    if not results:
        C.log("[report] no results to report")
        return 1
    C.log(f"[report] chart: {draw_chart(results, CHART)}")
    write_readme(readme_block(results))
    BENCH_README.write_text(bench_readme(results), encoding="utf-8")
    C.log(f"[report] {README} and {BENCH_README}; {time.perf_counter() - started:.0f} s in all")
    if failed:
        C.log(f"[report] failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
