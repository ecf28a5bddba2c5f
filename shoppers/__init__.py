"""Simulated shoppers and graded synthetic queries: evaluation tools, not part of the product.

Benchmarks and `fusionrank simulate` use them; nothing in service/, learner/, model/ or storage/
imports them (the CLI only inside its `simulate` command). Queries and shoppers are synthetic:
needs come from catalog attributes and true grades from attribute agreement, never from the
service.
"""
