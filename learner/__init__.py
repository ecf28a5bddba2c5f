"""The fusion head and how it is trained (bootstrap now, from feedback later)."""

import os

# See service/__init__.py: two OpenMP runtimes (torch, faiss) must not spin against each other.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
