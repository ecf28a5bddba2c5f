"""fusionrank: multimodal product search that learns from what shoppers click and buy."""

__version__ = "0.1.0"
