"""The fusion head and what a search computes with it; serving and training both import it."""
