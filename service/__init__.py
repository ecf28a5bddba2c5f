"""fusionrank: multimodal product search that learns from what shoppers click and buy."""

import os

# torch and faiss each bundle their own OpenMP runtime. With the default (active) wait policy
# their idle threads spin against each other on a small machine and a 5 ms encoder call can take
# 400 ms. Passive waiting must be set before either library loads, hence here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
