"""Benchmarks, each run as `python -m benchmarks.<name>`: this package is their entry point, so
it applies the server's process-wide OpenMP policy before any of them loads torch or faiss."""

from service.threads import apply_openmp_policy

apply_openmp_policy()
