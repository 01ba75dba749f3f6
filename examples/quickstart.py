"""A five-second tour: many threads and tasks call a batched function one item at a time."""

import asyncio
import threading

import batched


@batched.dynamically(batch_size=16, timeout_ms=2.0)
def square(numbers: list[int]) -> list[int]:
    # Called with up to 16 numbers at once, whatever the callers sent one by one.
    return [n * n for n in numbers]


def main() -> None:
    results: dict[int, int] = {}

    def caller(n: int) -> None:
        results[n] = square(n)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {n: n * n for n in range(64)}

    async def many_tasks() -> list[int]:
        return await asyncio.gather(*(square.acall(n) for n in range(100)))

    assert asyncio.run(many_tasks()) == [n * n for n in range(100)]
    assert square(list(range(5))) == [0, 1, 4, 9, 16]

    stats = square.stats
    print(
        f"{stats.total_processed} items in {stats.total_batches} batches "
        f"(mean batch {stats.avg_batch_size:.1f}, "
        f"p99 queue wait {stats.queue_wait_p99 * 1e3:.2f} ms)"
    )


if __name__ == "__main__":
    main()
