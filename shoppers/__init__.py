"""Simulated shoppers and graded synthetic queries: evaluation tools, not part of the product.

Benchmarks, tests and `python -m shoppers` use them; nothing in service/, learner/, model/ or
storage/ imports them, and the wheel does not ship them. Queries and shoppers are synthetic:
needs come from catalog attributes and true grades from attribute agreement, never from the
service.
"""
