"""The HTTP service case: all-MiniLM-L6-v2 behind FastAPI and uvicorn, with and without batching.

Three variants of one app, each served by uvicorn on a free loopback port from a fresh
interpreter, and loaded by 64 concurrent clients (``httpx.AsyncClient``, one connection each,
in the parent) that each send one request at a time (``POST /embed`` with ``{"text": ...}``,
answered with ``{"embedding": [384 floats]}``):

* no batching: a plain ``def`` endpoint calling ``model.encode(text)``, which FastAPI runs in
  its thread pool, so concurrent requests run the model concurrently;
* ``batched==0.1.5``: an ``async def`` endpoint awaiting ``batched.aio.dynamically`` around
  ``model.encode`` (served from the reference venv, which borrows FastAPI and uvicorn from this
  one);
* ours: the same endpoint with this package's ``batched.aio.dynamically``, length-aware;
* Ray Serve: the same endpoint awaiting Ray Serve's ``@serve.batch`` outside a deployment
  (``_ray_batch.py``, its replica-context check stubbed), around an ``async def`` that runs
  ``model.encode`` on a thread (``asyncio.to_thread``) so that the loop keeps serving.

The model, the sentences, ``batch_size``, ``timeout_ms`` and the torch threads are those of
``embed.py``. Each server loads and warms its model before it answers ``/health``; the client
then sends 64 warm-up requests and only then starts the clock. Latency is per request, from
sending it to holding the parsed answer. Every answer must be a finite 384-vector, and a
sample of sentences must get the same embedding from every variant.

    python benches/serve.py              # one round (~1.5 minutes)
    python benches/serve.py --full       # three rounds, medians
    python benches/serve.py --only ours --only ref

Results: a markdown report on stdout and in benches/results/serve.md, JSON in
benches/results/serve.json.
"""

import argparse
import asyncio
import contextlib
import json
import math
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import embed as E

SCRIPT = Path(__file__).resolve()

CONCURRENCY = 64
WARMUP_REQUESTS = 64
READY_TIMEOUT_S = 180.0
REQUEST_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
SPOT_CHECKS = 8


# --------------------------------------------------------------------------------------------
# Server side (a child: ``serve.py --server <impl> <json>``)
# --------------------------------------------------------------------------------------------


def build_app(model: Any, meter: E.ModelMeter, p: dict[str, Any]) -> Any:
    """The FastAPI app: ``/embed`` with or without batching, ``/meter`` and ``/health``."""
    from fastapi import Body, FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI()
    if p["batching"]:
        encode: Any
        if p.get("peer") == "ray":
            # Ray Serve's @serve.batch wants an async def; the model runs off the event loop,
            # as batched.aio runs a plain def.
            from _ray_batch import ray_batch

            async def encode_off_loop(batch: list[str]) -> list[Any]:
                return await asyncio.to_thread(E.encode_batch, model, batch)

            encode = ray_batch(
                encode_off_loop, batch_size=p["batch_size"], timeout_ms=p["timeout_ms"]
            )
        else:
            import batched

            encode = batched.aio.dynamically(**E.batching_options(p))(
                lambda batch: E.encode_batch(model, batch)
            )

        @app.post("/embed")
        async def embed_batched(text: str = Body(embed=True)) -> JSONResponse:
            return JSONResponse({"embedding": (await encode(text)).tolist()})

    else:

        @app.post("/embed")
        def embed_alone(text: str = Body(embed=True)) -> JSONResponse:
            return JSONResponse({"embedding": model.encode(text).tolist()})

    @app.get("/meter")
    def meter_counts() -> JSONResponse:
        """The model's batch counts and this process's CPU seconds, read before and after the
        timed window by the client."""
        return JSONResponse({"counts": meter.snapshot(), "cpu_s": time.process_time()})

    @app.get("/health")
    def health() -> JSONResponse:
        return JSONResponse({"ok": True})

    return app


def server_main(impl: str, payload_json: str) -> int:
    payload = json.loads(payload_json)
    if payload["params"]["batching"]:
        C.verify_impl(impl, payload["expect_dir"])
    import uvicorn

    p = payload["params"]
    model = E.load_model(p["torch_threads"])
    meter = E.ModelMeter()
    meter.attach(model)
    model.encode(E.make_sentences(p["seed"] + 1, E.WARMUP_SENTENCES), batch_size=E.IDEAL_BATCH_SIZE)
    app = build_app(model, meter, p)
    uvicorn.run(app, host="127.0.0.1", port=payload["port"], log_level="warning", access_log=False)
    return 0


# --------------------------------------------------------------------------------------------
# Client side (the parent)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    id: str
    label: str
    impl: str
    batching: bool
    length_aware: bool = False
    peer: str | None = None  # another library's batching, run in ours' interpreter


VARIANTS = (
    Variant("plain", "no batching (def endpoint)", "ours", batching=False),
    Variant("ref", f"{C.REF_VERSION}, aio", "ref", batching=True),
    Variant("ours", "ours, aio", "ours", batching=True, length_aware=True),
    Variant("ray", "Ray Serve @serve.batch", "ours", batching=True, peer="ray"),
)
VARIANT_IDS = [v.id for v in VARIANTS]
PROFILES: dict[str, dict[str, Any]] = {"quick": {"rounds": 1}, "full": {"rounds": 3}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, limit: int = 4000) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text if len(text) <= limit else "...\n" + text[-limit:]


def wait_ready(proc: subprocess.Popen[bytes], url: str) -> None:
    """Polls ``/health`` until it answers; fails at once if the server exits."""
    import httpx

    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(base_url=url, timeout=1.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise C.BenchError(f"server exited with status {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get("/health").status_code == 200:
                    return
            time.sleep(0.2)
    raise C.BenchError(f"server not ready after {READY_TIMEOUT_S:.0f} s")


@contextlib.contextmanager
def running_server(
    variant: Variant, params: dict[str, Any], expect_dir: str, log_path: Path
) -> Iterator[str]:
    """Starts the variant's server, yields its URL once it is ready, and stops it."""
    port = free_port()
    payload = {"params": params, "expect_dir": expect_dir, "port": port}
    args = ["--server", variant.impl, json.dumps(payload)]
    proc = C.spawn_worker(SCRIPT, variant.impl, args, log_path)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(proc, url)
        yield url
    except Exception as exc:
        if proc.poll() is None:
            raise
        raise C.BenchError(
            f"{type(exc).__name__}: {exc} (the server exited with status {proc.returncode})"
        ) from exc
    finally:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:  # a server that ignores SIGTERM must still go
            proc.kill()
            proc.wait()


def check_answer(vector: Any) -> list[float]:
    """The embedding of one answer; raises BenchError unless it is 384 finite floats."""
    if not isinstance(vector, list) or len(vector) != E.EMBEDDING_DIM:
        raise C.BenchError(f"answer is not a {E.EMBEDDING_DIM}-vector: {str(vector)[:80]}")
    if not all(isinstance(x, float) and math.isfinite(x) for x in vector):
        raise C.BenchError("answer has non-finite or non-float values")
    return vector


async def load_server(url: str, sentences: list[str], concurrency: int) -> dict[str, Any]:
    """Warm-up requests, then the timed load; returns metrics and the answers.

    Each in-flight request borrows one of ``concurrency`` clients with one connection each:
    one client with a pool of 64 connections spends most of the client's CPU searching its
    pool (httpcore scans every connection for every request), CPU the server then lacks."""
    import ssl

    import httpx

    tls = ssl.create_default_context()  # unused on http://, but each client would load its own
    async with contextlib.AsyncExitStack() as stack:
        idle = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=url,
                    limits=httpx.Limits(max_connections=1),
                    timeout=REQUEST_TIMEOUT_S,
                    verify=tls,
                )
            )
            for _ in range(concurrency)
        ]

        async def post(text: str) -> list[float]:
            client = idle.pop()  # never empty: at most ``concurrency`` requests are in flight
            try:
                response = await client.post("/embed", json={"text": text})
            finally:
                idle.append(client)
            response.raise_for_status()
            return check_answer(response.json()["embedding"])

        warm = E.make_sentences(E.SEED + 2, WARMUP_REQUESTS)
        await E.drive_tasks(post, warm, concurrency)
        before = (await idle[0].get("/meter")).json()
        outcome = await E.drive_tasks(post, sentences, concurrency)
        after = (await idle[0].get("/meter")).json()

    lat = C.latency_summary(outcome.latencies)
    server_cpu = (after["cpu_s"] - before["cpu_s"]) / outcome.wall_s
    return {
        "requests_per_s": len(sentences) / outcome.wall_s,
        "p50_ms": lat["p50_us"] / 1e3,
        "p99_ms": lat["p99_us"] / 1e3,
        "mean_ms": lat["mean_us"] / 1e3,
        "wall_s": outcome.wall_s,
        "server_cpu_util": server_cpu,
        "client_cpu_util": outcome.cpu_util,
        "other_cpu": outcome.other_cpu - server_cpu,
        **E.model_metrics(before["counts"], after["counts"], outcome.wall_s),
        "answers": outcome.results,
    }


def run_variant(
    variant: Variant, settings: E.Settings, sentences: list[str], expect_dir: str
) -> dict[str, Any]:
    """One server, one load; failures come back as ``{"error": ...}`` with the server's log."""
    params = {
        **vars(settings),
        "length_aware": variant.length_aware,
        "batching": variant.batching,
        "peer": variant.peer,
    }
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "server.log"
        try:
            with running_server(variant, params, expect_dir, log_path) as url:
                metrics = asyncio.run(load_server(url, sentences, settings.tasks))
        except Exception as exc:  # one broken variant must not hide the others
            return {"error": f"{type(exc).__name__}: {exc}", "stderr": log_tail(log_path)}
        server_log = log_tail(log_path)
    result: dict[str, Any] = {"impl": variant.impl, "metrics": metrics}
    if server_log.strip():
        result["stderr"] = server_log
    return result


def spot_check(runs: dict[str, list[dict[str, Any]]], count: int) -> list[str]:
    """Problems found comparing a seeded sample of answers across every run of every variant:
    each must match the first run's answer for the same sentence (cosine ≥ embed's bound)."""
    import numpy as np

    answered = [r["metrics"]["answers"] for rs in runs.values() for r in rs if "error" not in r]
    if len(answered) < 2:
        return []
    problems = []
    for i in random.Random(count).sample(range(count), SPOT_CHECKS):
        first = np.asarray(answered[0][i])
        for other in answered[1:]:
            vec = np.asarray(other[i])
            cosine = float(first @ vec / (np.linalg.norm(first) * np.linalg.norm(vec)))
            if cosine < E.MIN_COSINE:
                problems.append(f"sentence {i}: cosine {cosine:.4f} between two runs")
    return problems


def run_rounds(
    variants: Sequence[Variant], settings: E.Settings, rounds: int
) -> dict[str, list[dict[str, Any]]]:
    """Runs every variant once per round, in order; drops the answers once checked."""
    sentences = E.make_sentences(settings.seed, settings.sentences)
    expect = C.expected_locations([v.impl for v in variants])
    runs: dict[str, list[dict[str, Any]]] = {v.id: [] for v in variants}
    for round_no in range(1, rounds + 1):
        for variant in variants:
            t = time.perf_counter()
            result = run_variant(variant, settings, sentences, expect[variant.impl])
            runs[variant.id].append(result)
            log_result(f"[{variant.label} #{round_no}]", result, time.perf_counter() - t)
    problems = spot_check(runs, len(sentences))
    for rs in runs.values():
        for r in rs:
            if "error" not in r:
                r["metrics"].pop("answers")
                if problems:
                    r.update(error="answers differ between variants", details=problems)
    return runs


def log_result(tag: str, result: dict[str, Any], seconds: float) -> None:
    if "error" in result:
        C.log(f"{tag}: ERROR {result['error']}\n{result.get('stderr', '')}")
        return
    m = result["metrics"]
    C.log(
        f"{tag}: {C.fmt_num(m['requests_per_s'], 1)} requests/s, "
        f"p50 {C.fmt_num(m['p50_ms'], 0)} ms, p99 {C.fmt_num(m['p99_ms'], 0)} ms, "
        f"batch {C.fmt_num(m['mean_batch'], 1)}, padded {C.fmt_num(m['padded_fraction'], 3)}, "
        f"other CPU {C.fmt_num(m['other_cpu'], 2)}  ({seconds:.1f} s)"
    )


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


@dataclass
class Results:
    """Every round's result per variant, and their per-metric medians."""

    runs: dict[str, list[dict[str, Any]]]
    combined: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.combined = {
            vid: C.combine_quiet_runs(rs, E.MAX_OTHER_CPU) for vid, rs in self.runs.items()
        }

    def metric(self, variant_id: str, key: str) -> Any:
        return C.metric(self.combined.get(variant_id), key)


BASES = (("plain", "no batching"), ("ref", C.REF_VERSION), ("ray", "Ray Serve"))


def ratio_cells(results: Results, variant_id: str, key: str) -> list[str]:
    """``key`` of this variant divided by the same of each base (blank against itself)."""
    value = results.metric(variant_id, key)
    return [
        "" if base == variant_id else C.fmt_ratio(C.gain(value, results.metric(base, key), True))
        for base, _ in BASES
    ]


def render_table(variants: Sequence[Variant], results: Results) -> str:
    """One row per variant: throughput and latency, each also as a ratio to both baselines."""
    headers = ["variant", "requests/s", "p50 ms", "p99 ms"]
    headers += [f"requests/s ÷ {name}" for _, name in BASES]
    headers += [f"p99 ÷ {name}" for _, name in BASES]
    headers += ["mean batch", "padded fraction", "other CPU", "quiet runs"]
    rows = []
    for v in variants:
        if "error" in results.combined.get(v.id, {"error": "not run"}):
            rows.append([v.label, "ERROR", *("" for _ in headers[2:])])
            continue
        rows.append(
            [
                v.label,
                C.fmt_num(results.metric(v.id, "requests_per_s"), 1),
                C.fmt_num(results.metric(v.id, "p50_ms"), 0),
                C.fmt_num(results.metric(v.id, "p99_ms"), 0),
                *ratio_cells(results, v.id, "requests_per_s"),
                *ratio_cells(results, v.id, "p99_ms"),
                C.fmt_num(results.metric(v.id, "mean_batch"), 1),
                C.fmt_num(results.metric(v.id, "padded_fraction"), 3),
                C.fmt_num(results.metric(v.id, "other_cpu"), 2),
                E.quiet_runs(results.combined[v.id], len(results.runs.get(v.id, []))),
            ]
        )
    return C.markdown_table(headers, rows)


def render_report(
    variants: Sequence[Variant],
    results: Results,
    settings: E.Settings,
    machine: dict[str, Any],
    run_desc: str,
) -> str:
    out = [
        f"## all-MiniLM-L6-v2 behind FastAPI: ours vs {C.REF_VERSION} vs no batching ({run_desc})",
        "",
        f"{C.machine_line(machine)}; uvicorn on loopback, one fresh server per variant and "
        "round, the clients (httpx, one connection each) in the parent; medians over the rounds.",
        "",
        f"{settings.sentences:,} requests, one sentence each ({E.MIN_WORDS}..{E.MAX_WORDS} words, "
        f"seed {settings.seed}), {settings.tasks} at a time after {WARMUP_REQUESTS} warm-up "
        f"requests. `torch.set_num_threads({settings.torch_threads})`; batching variants: "
        f"`batch_size={settings.batch_size}`, `timeout_ms={settings.timeout_ms:g}`, ours with "
        "`sort_by_length=True, length_fn=word_count`. Latency: per request, as the client sees it. "
        "Ratios divide this row's figure by the named variant's (requests/s: higher is better; "
        "p99: lower is better). Other CPU: cores kept busy by anything but the server and the "
        "clients during the run (hypervisor steal included). Quiet runs: k/n, the medians are "
        f"over the k of n runs with other CPU at most {E.MAX_OTHER_CPU:g} (all n when k is 0).",
        "",
        render_table(variants, results),
        *C.errors_markdown(
            [(v.label, results.combined[v.id]) for v in variants if v.id in failed_ids(results)]
        ),
    ]
    return "\n".join(out) + "\n"


def failed_ids(results: Results) -> set[str]:
    return {vid for vid, result in results.combined.items() if "error" in result}


# --------------------------------------------------------------------------------------------
# Parent
# --------------------------------------------------------------------------------------------


def parent_main(args: argparse.Namespace) -> int:
    profile_name = "full" if args.full else "quick"
    rounds = args.rounds or PROFILES[profile_name]["rounds"]
    variants = [v for v in VARIANTS if not args.only or v.id in args.only]
    settings = E.Settings(
        batch_size=args.batch_size,
        task_batch_size=args.batch_size,
        timeout_ms=args.timeout_ms,
        torch_threads=args.torch_threads,
        tasks=CONCURRENCY,
    )

    started = time.perf_counter()
    results = Results(run_rounds(variants, settings, rounds))
    elapsed = time.perf_counter() - started
    machine = C.machine_info()
    run_desc = f"{profile_name} run, {rounds} round{'s' if rounds > 1 else ''}, {elapsed:.0f} s"
    C.write_results(
        args,
        render_report(variants, results, settings, machine, run_desc),
        {
            "benchmark": "serve",
            "profile": profile_name,
            "rounds": rounds,
            "elapsed_s": elapsed,
            "settings": {
                **vars(settings),
                **E.RECORDED_SETTINGS,
                "warmup_requests": WARMUP_REQUESTS,
            },
            "machine": machine,
            "variants": [
                {**vars(v), "result": results.combined.get(v.id), "runs": results.runs[v.id]}
                for v in variants
            ],
        },
    )
    return C.exit_status(args, bool(failed_ids(results)))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--server"]:
        if len(argv) != 3:
            print("usage: serve.py --server <impl> <json>", file=sys.stderr)
            return 2
        return server_main(argv[1], argv[2])

    count = C.whole_number(1)
    parser = C.make_parser(__doc__, "one round", "three rounds")
    parser.add_argument("--rounds", type=count, metavar="N", help="override the profile's rounds")
    parser.add_argument("--only", action="append", choices=VARIANT_IDS, help="run only these")
    parser.add_argument("--batch-size", type=count, default=E.BATCH_SIZE, metavar="N")
    parser.add_argument("--timeout-ms", type=float, default=E.TIMEOUT_MS, metavar="MS")
    parser.add_argument(
        "--torch-threads", type=count, default=E.default_torch_threads(), metavar="N"
    )
    C.add_report_arguments(parser, "serve")
    return parent_main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
