"""Training the fusion head: bootstrapped from the catalog at ingest, refreshed from feedback."""
