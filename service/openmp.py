"""The process-wide OpenMP policy, applied once by each entry point before torch or faiss load.

torch and faiss each bundle GNU OpenMP. With its default (active) wait policy their idle threads
spin against each other on a small machine, and a single encoder call can take many times
longer. Threads wait passively, after a spin long enough to keep a two-thread team awake between
one query's layers (docs/performance.md has the measurements).
"""

from __future__ import annotations

import os

POLICY = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "300000"}


def apply_openmp_policy() -> None:
    """Set the policy unless the environment already chose; only takes effect before the
    OpenMP runtimes load (the first `import torch` or `import faiss`)."""
    for name, value in POLICY.items():
        os.environ.setdefault(name, value)
