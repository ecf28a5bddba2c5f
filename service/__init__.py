"""fusionrank: multimodal product search that learns from what shoppers click and buy."""

import os

# torch and faiss each bundle their own OpenMP runtime. With the default (active) wait policy
# their idle threads spin against each other on a small machine and a 5 ms encoder call can take
# 400 ms (that was with FAISS searching on a team of its own; serving now keeps it on one thread).
# Passive waiting must be set before either library loads, hence here. Sleeping at once, though,
# makes a two-thread team wake its partner on every layer of a single query, so a team spins
# first (GNU OpenMP, which both bundle). 300,000 spins (libgomp's own default, about 8 ms here)
# also keep the partner awake across the few milliseconds between one search's encode and the
# next. Side by side with 10,000 spins through HTTP (benchmarks.latency's floor alternated):
# text p50 19.01 -> 17.26 ms and image 24.23 -> 22.90 ms, throughput at 1, 4 and 8 clients
# level; with a core kept busy beside the server, level in one run (text 18.17 / 18.57 ms,
# image 25.09 / 24.96) and text worse in another (18.19 / 19.52). An idle core spins once.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GOMP_SPINCOUNT", "300000")

__version__ = "0.1.0"
