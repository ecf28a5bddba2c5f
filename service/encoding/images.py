"""Untrusted image bytes to a decoded RGB image, with size, pixel and format limits."""

from __future__ import annotations

import base64
import binascii
import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import InvalidImage, PayloadTooLarge


def decode_base64(data: str, max_bytes: int) -> bytes:
    if data.startswith("data:") and "," in data:
        data = data.split(",", 1)[1]  # data URLs are what browsers produce
    if len(data) > (max_bytes * 4) // 3 + 4:
        raise PayloadTooLarge(f"image is larger than the {max_bytes} byte limit")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidImage("image is not valid base64") from e


def decode_image(
    data: bytes, *, max_bytes: int, max_pixels: int, min_side: int | None = None
) -> Image.Image:
    """`min_side`: the caller never needs more pixels per side than this, so a JPEG is decoded at
    the smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides at least that long, several
    times faster for a phone photo; the pixel limit still applies to the size the file
    declares."""
    if not data:
        raise InvalidImage("image is empty")
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"image is {len(data)} bytes; the limit is {max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise PayloadTooLarge(f"image is {w}x{h} pixels; the limit is {max_pixels} pixels")
            if min_side:
                img.draft("RGB", (min_side, min_side))
            img.load()
            return ImageOps.exif_transpose(img).convert("RGB")  # phone photos carry rotation
    except PayloadTooLarge:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise PayloadTooLarge(f"image has too many pixels: {e}") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InvalidImage(f"image cannot be decoded ({e}); send a JPEG, PNG or WebP") from e
