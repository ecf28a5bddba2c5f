"""Persistence: SQL models and repositories, and atomic on-disk artifacts."""
