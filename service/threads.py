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
    """How a process uses its cores, decided once at its entry point. The ONNX Runtime encoders
    have pools of their own (Settings.torch_threads, every core by default), shared by every
    search: a lone query is fastest on all of them, and concurrent ones lose little by sharing
    (benchmarks/encode_threads.py); torch then only scores, on one thread."""

    torch_threads: int  # torch threads of the thread that builds the process
    search_concurrency: int  # searches run at once (more wait in line)
    refresh_threads: int  # torch threads of a refresh, beside searches in the same process or not
    # a composed query encodes its text on a second thread (ONNX Runtime only: on PyTorch that
    # thread leads a second OpenMP team, and past one thread per core every team stops spinning)
    encode_beside: bool = False

    @classmethod
    def serving(cls, settings: Settings) -> ThreadPolicy:
        """An API process. On the torch backend the encoders run on torch's threads: every core."""
        onnx = settings.encoder_backend == "onnx"
        torch_threads = settings.torch_threads or (1 if onnx else _cores())
        # an in-process refresh leaves searches at least one core's worth of its time
        refresh_threads = settings.torch_threads or max(1, _cores() // 2)
        return cls(
            torch_threads=torch_threads,
            search_concurrency=settings.search_concurrency or _cores(),
            refresh_threads=refresh_threads,
            encode_beside=onnx,
        )

    @classmethod
    def batch(cls, settings: Settings) -> ThreadPolicy:
        """Ingest and the learner process: every core for batches (or the configured count)."""
        threads = settings.torch_threads or _cores()
        return cls(torch_threads=threads, search_concurrency=1, refresh_threads=threads)

    def apply(self) -> None:
        """Set the calling thread's torch threads (new threads start from the same count)."""
        import torch

        torch.set_num_threads(self.torch_threads)


def one_torch_thread() -> None:
    """For torch work on a thread other than the one that builds the process (search pool,
    catalog writes, head loads). With PyTorch encoders on every core, a second thread on every
    core would lead a second OpenMP team, and past one team thread per core every team stops
    spinning between layers for the life of the process; with ONNX Runtime, torch has one
    thread anyway."""
    import torch

    torch.set_num_threads(1)


def _cores() -> int:
    return os.cpu_count() or 1
