"""Where a search runs: on the event loop itself when it is the only search in flight, on a
pool of search threads when several are.

A lone search gains nothing from a thread of its own (the loop has nothing else to do
meanwhile), and the hop there and back costs two thread wake-ups. Several at once must not wait
for each other on the loop, so they go to the pool, where they share the encoders' threads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from service.threads import one_torch_thread

T = TypeVar("T")


class SearchDispatcher:
    def __init__(self, threads: int) -> None:
        self.pool = ThreadPoolExecutor(
            threads, thread_name_prefix="search", initializer=one_torch_thread
        )
        self._in_flight = 0
        self.inline = 0  # searches run on the loop so far (tests, operators)

    async def run(self, fn: Callable[[], T]) -> T:
        self._in_flight += 1
        try:
            # One turn of the loop first, so that requests which arrived together (or while the
            # loop was busy with a search) have all counted themselves before any one decides.
            await asyncio.sleep(0)
            if self._in_flight == 1:
                self.inline += 1
                return fn()
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn)
        finally:
            self._in_flight -= 1

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True)
