"""What every processor does around its own ``shutdown``: ``with`` (and, for the asyncio
flavours, ``async with``) blocks that shut it down on exit, and a repr saying whether it runs."""

from __future__ import annotations

from typing import Self


class Lifecycle:
    """``with processor:`` shuts it down on exit; subclasses provide ``shutdown`` and
    ``closed``."""

    def shutdown(self, drain: bool = True, timeout: float | None = None) -> bool:
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "running"
        return f"<{type(self).__name__} {getattr(self, '__qualname__', '?')} ({state})>"


class AsyncLifecycle(Lifecycle):
    """Also ``async with processor:``, which awaits ``ashutdown`` on exit."""

    async def ashutdown(self, drain: bool = True) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.ashutdown()
