"""The query path: a search from query to ranked hits, its logging and the head it serves."""
