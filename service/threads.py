"""The process's thread policy: decided once by each entry point and passed in.

torch and faiss each bundle GNU OpenMP. With its default (active) wait policy their idle threads
spin against each other on a small machine, and a single encoder call can take many times
longer. Threads wait passively, after a spin long enough to keep a two-thread team awake between
one query's layers (docs/performance.md has the measurements). That part must be in the
environment before the OpenMP runtimes load, so entry points call `apply_openmp_policy` first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from service.config import Settings

POLICY = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "300000"}


def apply_openmp_policy() -> None:
    """Set the policy unless the environment already chose; only takes effect before the
    OpenMP runtimes load (the first `import torch` or `import faiss`)."""
    for name, value in POLICY.items():
        os.environ.setdefault(name, value)


@dataclass(frozen=True)
class ThreadPolicy:
    """How a process uses its cores."""

    torch_threads: int  # torch threads of the thread that builds the process
    search_concurrency: int  # searches run at once (more wait in line)
    search_threads: int  # torch threads per search encode; 0: each search chooses (EncodeThreads)

    @classmethod
    def serving(cls, settings: Settings) -> ThreadPolicy:
        """An API process: one thread outside searches, which claim their own per encode (every
        free core alone on the event loop, one each beside other searches)."""
        return cls(
            torch_threads=settings.torch_threads or 1,
            search_concurrency=settings.search_concurrency or _cores(),
            search_threads=settings.torch_threads,
        )

    @classmethod
    def batch(cls, settings: Settings) -> ThreadPolicy:
        """Ingest and the learner process: every core for batches (or the configured count)."""
        return cls(
            torch_threads=settings.torch_threads or _cores(),
            search_concurrency=1,
            search_threads=settings.torch_threads,
        )

    def apply(self) -> None:
        """Set the calling thread's torch threads (new threads start from the same count)."""
        import torch

        torch.set_num_threads(self.torch_threads)


def _cores() -> int:
    return os.cpu_count() or 1
