"""Frozen encoders plus the content-hash cache: the only place catalog content becomes vectors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from service.config import Settings
from service.encoding.cache import EmbeddingCache, content_key
from service.encoding.encoders import (
    ImageEncoder,
    TextEncoder,
    load_colour_encoder,
    load_image_encoder,
    load_text_encoder,
)
from service.encoding.images import decode_image
from service.errors import FusionrankError


class ImageVectors(NamedTuple):
    vectors: np.ndarray  # (n, image dim), zeros where there is no readable image
    colours: np.ndarray  # (n, colour dim), likewise; colour dim 0 without a colour encoder
    keys: list[str | None]  # content sha256 per image, None where there is no readable image
    cache_hits: int  # image vectors read from the cache (the costly part)


class Embedder:
    def __init__(
        self,
        text_encoder: TextEncoder,
        image_encoder: ImageEncoder,
        cache_dir: Path,
        *,
        colour_encoder: ImageEncoder | None = None,
        batch_size: int = 64,
        max_image_bytes: int = 8 << 20,
        max_image_pixels: int = 40_000_000,
    ) -> None:
        self.text_encoder, self.image_encoder = text_encoder, image_encoder
        self.colour_encoder = colour_encoder
        self.text_cache = EmbeddingCache(cache_dir, text_encoder.id, text_encoder.dim)
        self.image_cache = EmbeddingCache(cache_dir, image_encoder.id, image_encoder.dim)
        self.colour_cache = (
            EmbeddingCache(cache_dir, colour_encoder.id, colour_encoder.dim)
            if colour_encoder is not None
            else None
        )
        self.batch_size = batch_size
        self.max_image_bytes, self.max_image_pixels = max_image_bytes, max_image_pixels

    def decode(self, data: bytes) -> Image.Image:
        # Decoded at no less than twice the encoder's input, so that the encoder's own resize
        # still filters the last halving: vectors of photos up to that size do not change.
        size = getattr(self.image_encoder, "input_size", None)
        return decode_image(
            data,
            max_bytes=self.max_image_bytes,
            max_pixels=self.max_image_pixels,
            min_side=2 * size if size else None,
        )

    def texts(self, texts: Sequence[str], *, progress: bool = False) -> tuple[np.ndarray, int]:
        """Vectors for texts, and how many came from the cache."""
        keys = [content_key(t) for t in texts]
        out = np.zeros((len(texts), self.text_encoder.dim), np.float32)
        out, found = self.text_cache.get_many(keys)
        todo = np.flatnonzero(~found)
        step = max(self.batch_size, 256)
        for start in tqdm(
            range(0, len(todo), step), desc="embed titles", unit="batch", disable=not progress
        ):
            chunk = todo[start : start + step]
            vecs = self.text_encoder.encode([texts[i] for i in chunk.tolist()])
            out[chunk] = vecs
            self.text_cache.put_many([keys[i] for i in chunk], vecs)
        return out, len(texts) - len(todo)

    def images(
        self,
        load: Sequence[Callable[[], bytes] | None],
        *,
        progress: bool = False,
        use_cache: bool = True,
    ) -> ImageVectors:
        """Vectors (and colour descriptors) for images given as byte loaders (None = no image).
        An unreadable or undecodable image gives zero rows and no key: the product stays
        searchable by its text."""
        n = len(load)
        out = np.zeros((n, self.image_encoder.dim), np.float32)
        colours = np.zeros((n, self.colour_dim), np.float32)
        ok = np.zeros(n, bool)
        hits = 0
        all_keys: list[str | None] = [None] * n
        bar = tqdm(total=n, desc="embed images", unit="img", disable=not progress)
        with ThreadPoolExecutor(max_workers=2) as pool:
            for start in range(0, n, self.batch_size):
                idx = list(range(start, min(n, start + self.batch_size)))
                loaded = list(pool.map(lambda i: _read(load[i]), idx))
                keys = {i: content_key(b) for i, b in zip(idx, loaded, strict=True) if b}
                for i, key in keys.items():
                    all_keys[i] = key
                # each part comes from the cache where it can: a cache filled before a colour
                # encoder was configured only needs the (cheap) colour computed
                need_vec, need_col = set(keys), set(keys)
                if use_cache and keys:
                    at = list(keys)
                    vecs, has_vec = self.image_cache.get_many([keys[i] for i in at])
                    cols, has_col = self._cached_colours([keys[i] for i in at])
                    out[at], colours[at] = vecs, cols
                    ok[at] = has_vec & has_col
                    need_vec -= {i for i, h in zip(at, has_vec.tolist(), strict=True) if h}
                    need_col -= {i for i, h in zip(at, has_col.tolist(), strict=True) if h}
                    hits += int(has_vec.sum())
                pending = sorted(need_vec | need_col)
                decoded = list(pool.map(self._try_decode, [loaded[i - start] for i in pending]))
                good = {i: im for i, im in zip(pending, decoded, strict=True) if im is not None}
                for todo, encoder, cache, dest in (
                    (need_vec, self.image_encoder, self.image_cache, out),
                    (need_col, self.colour_encoder, self.colour_cache, colours),
                ):
                    rows = [i for i in sorted(todo) if i in good]
                    if rows and encoder is not None and cache is not None:
                        vecs = encoder.encode([good[i] for i in rows])
                        dest[rows] = vecs
                        if use_cache:
                            cache.put_many([keys[i] for i in rows], vecs)
                for i in good:
                    ok[i] = True
                bar.update(len(idx))
        bar.close()
        keys_out = [k if good else None for k, good in zip(all_keys, ok, strict=True)]
        return ImageVectors(out, colours, keys_out, hits)

    @property
    def colour_dim(self) -> int:
        return self.colour_encoder.dim if self.colour_encoder is not None else 0

    def colour(self, image: Image.Image) -> np.ndarray | None:
        """A query photo's colour descriptor (None without a colour encoder)."""
        return None if self.colour_encoder is None else self.colour_encoder.encode([image])[0]

    def _cached_colours(self, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Cached colour rows and which keys had one (all of them, without a colour encoder)."""
        if self.colour_cache is None:
            return np.zeros((len(keys), 0), np.float32), np.ones(len(keys), bool)
        return self.colour_cache.get_many(keys)

    def _try_decode(self, data: bytes | None) -> Image.Image | None:
        if not data:
            return None
        try:
            return self.decode(data)
        except FusionrankError:
            return None


def _read(loader: Callable[[], bytes] | None) -> bytes | None:
    if loader is None:
        return None
    try:
        return loader()
    except OSError:
        return None


def make_embedder(settings: Settings) -> Embedder:
    """The configured encoders with the embedding cache of the data directory."""
    return Embedder(
        load_text_encoder(settings),
        load_image_encoder(settings),
        settings.cache_dir,
        colour_encoder=load_colour_encoder(settings),
        batch_size=settings.encode_batch_size,
        max_image_bytes=settings.max_image_bytes,
        max_image_pixels=settings.max_image_pixels,
    )
