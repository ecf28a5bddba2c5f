"""Training the fusion head: bootstrapped from the catalog, refreshed from feedback."""

import os

# See service/__init__.py: two OpenMP runtimes (torch, faiss) must not spin against each other.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
