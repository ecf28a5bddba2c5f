"""The catalog: reading catalog files, ingest, the in-memory index and incremental writes."""
