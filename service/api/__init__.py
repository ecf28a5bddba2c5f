"""HTTP layer: the only place domain errors become HTTP responses."""
