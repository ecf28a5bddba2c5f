"""The fusion head and how it is trained (bootstrap now, from feedback later)."""
