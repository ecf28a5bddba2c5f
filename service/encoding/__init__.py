"""The frozen encoders: pictures and text to vectors, with their cache and decoding limits."""
