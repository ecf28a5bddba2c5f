"""How many torch threads a query's encoders get, so that searches in one process do not fight
over the cores (docs/performance.md has the measurements behind each choice)."""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch

T = TypeVar("T")
U = TypeVar("U")


class ThreadChoice:
    """Whether a lone query encodes faster on every free core or on one, learned from its own
    encode times: two threads usually win, but when something else takes a core a two-thread
    team waits at every layer for the parked thread. The choice follows the median of each
    arm's recent times and now and then tries the other arm (after `explore_every` queries,
    doubling up to `max_every` while the best arm stays), so that a freed core is noticed and a
    slower arm costs few queries. Until the other arm has `min_samples` times it is tried every
    `warmup` queries, and a tried all-core encode that beats one thread is confirmed soon, so
    that a burst of noise does not hold the choice for hundreds of queries."""

    def __init__(
        self,
        *,
        window: int = 7,
        explore_every: int = 16,
        max_every: int = 256,
        warmup: int = 4,
        min_samples: int = 3,
        margin: float = 0.85,
    ) -> None:
        self.margin = margin
        self._window, self._min = window, min_samples
        self._base, self._max, self._warmup = explore_every, max_every, warmup
        self._times: dict[tuple[str, int], deque[float]] = {}
        self._countdown: dict[tuple[str, int], int] = {}
        self._every: dict[tuple[str, int], int] = {}
        self._explored_best: dict[tuple[str, int], int] = {}

    def choose(self, kind: str, free: int) -> int:
        if free <= 1:
            return 1
        key = (kind, free)
        best = self.best(kind, free)
        other = 1 if best == free else free
        left = self._countdown.get(key, self._warmup) - 1
        if left > 0:
            self._countdown[key] = left
            return best
        if len(self._times.get((kind, other), ())) + 1 < self._min:
            self._countdown[key] = self._warmup  # still measuring the other arm
        else:
            every = self._every.get(key, self._base)
            same = self._explored_best.get(key) == best
            every = min(every * 2, self._max) if same else self._base
            self._every[key] = self._countdown[key] = every
        self._explored_best[key] = best
        return other

    def best(self, kind: str, free: int) -> int:
        medians = {
            n: statistics.median(t)
            for n in (free, 1)
            if len(t := self._times.get((kind, n), ())) >= self._min
        }
        if len(medians) < 2:
            return free  # the usual winner, until both arms have been measured
        # one thread must win clearly: where the two are close, noise would flip the choice
        return 1 if medians[1] < self.margin * medians[free] else free

    def observe(self, kind: str, threads: int, ms: float, free: int = 0) -> None:
        """`free`: the cores `choose` chose between for this encode (0: not from `choose`)."""
        chosen = self.best(kind, free) if free > 1 else threads
        self._times.setdefault((kind, threads), deque(maxlen=self._window)).append(ms)
        if threads == free != chosen and ms < statistics.median(self._times[(kind, chosen)]):
            self._countdown[(kind, free)] = self._warmup  # every core is back: confirm it soon
            self._every.pop((kind, free), None)

    def samples(self) -> dict[tuple[str, int], int]:
        """How many recent times each (query type, threads) arm holds."""
        return {arm: len(t) for arm, t in self._times.items()}


def off_the_leader() -> None:
    """One torch thread for the calling thread, for torch work off the event loop (catalog
    writes, head loads): on every core it would lead a second OpenMP team, after which every
    search pays (EncodeThreads.lead). New threads inherit the last lone search's count."""
    torch.set_num_threads(1)


class EncodeThreads:
    """torch threads for one query's encoders: the faster of every free core and one (see
    ThreadChoice) while it is the only query encoding on the leading thread, one core each while
    several are, so that concurrent queries run side by side instead of fighting over one team.
    torch's thread count is per OS thread, so each search sets its own; `fixed` keeps a
    configured count.

    Background work in the same process (a refresh) reserves cores first: a team with more
    threads than free cores waits at every barrier for a parked thread. Only one OS thread leads
    a team (`lead`): GNU OpenMP keeps a team for every thread that ever ran a parallel region,
    and once it manages more threads than there are cores, every team stops spinning between
    layers for the life of the process."""

    def __init__(self, cores: int, *, fixed: bool = False) -> None:
        self._cores = max(1, cores)
        self._fixed = fixed
        self._busy = 0
        self._reserved = 0
        self._changes = 0  # claims and reservations so far: did anything overlap an encode?
        self._leader: int | None = None  # the thread whose lone encodes may use every core
        self._lock = threading.Lock()
        self.choice = ThreadChoice()
        # a composed query's second encoder (a thread starts on first use)
        self._beside = ThreadPoolExecutor(1, thread_name_prefix="encode-beside")

    def warm(self, encode: Callable[[], object]) -> None:
        """Run `encode` twice at every thread count an encode may be given: the first encodes
        at a count are several times slower, and the choice must not learn from them."""
        before = torch.get_num_threads()
        try:
            for n in self.counts():
                torch.set_num_threads(n)
                encode()
                encode()
        finally:
            torch.set_num_threads(before)

    def side_by_side(
        self, threads: int, here: Callable[[], T], beside: Callable[[], U]
    ) -> tuple[T, U]:
        """`here` on this thread and `beside` on a helper thread, on half of `threads` each:
        neither of a composed query's encoders makes good use of a second core alone."""

        def run_beside() -> U:
            torch.set_num_threads(threads // 2)  # per OS thread: the helper's own count
            with torch.inference_mode():
                return beside()

        torch.set_num_threads(threads - threads // 2)
        pending = self._beside.submit(run_beside)
        return here(), pending.result()

    def lead(self) -> None:
        """From now on, only the calling thread encodes on more than one core (unless `fixed`);
        lone queries on any other thread use one. Until called, any thread may."""
        self._leader = threading.get_ident()

    def counts(self) -> list[int]:
        """Every torch thread count an encode may be given."""
        return [self._cores] if self._fixed else sorted({1, self._cores})

    @contextmanager
    def claim(self, kind: str = "") -> Iterator[int]:
        """`kind` (the query type) keys the learned choice: text and image encoders differ."""
        with self._lock:
            self._busy += 1
            self._changes += 1
            leads = self._leader in (None, threading.get_ident())
            alone, start = self._busy == 1 and not self._fixed and leads, self._changes
            free = max(1, self._cores - self._reserved)
            if self._fixed:
                n = self._cores
            elif alone:
                n = self.choice.choose(kind, free)
            else:
                n = 1
        torch.set_num_threads(n)
        started = time.perf_counter()
        try:
            yield n
        finally:
            ms = (time.perf_counter() - started) * 1000
            with self._lock:
                self._busy -= 1
                if alone and self._changes == start and free > 1:  # nothing shared the cores
                    self.choice.observe(kind, n, ms, free)

    @contextmanager
    def reserve(self, share: float = 0.5) -> Iterator[int]:
        """Set aside `share` of the cores for background work while searches are served (at
        least one, and one is always left to searches unless there is only one); yields how
        many threads that work should use."""
        n = max(1, min(self._cores - 1, round(self._cores * share)))
        with self._lock:
            self._reserved += n
            self._changes += 1
        try:
            yield n
        finally:
            with self._lock:
                self._reserved -= n
                self._changes += 1
