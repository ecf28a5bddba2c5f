"""Untrusted image bytes: every way to be wrong gives InvalidImage or PayloadTooLarge, quickly."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
from PIL import Image

from service.encoding.images import decode_base64, decode_image
from service.errors import InvalidImage, PayloadTooLarge

LIMITS = {"max_bytes": 8 * 1024 * 1024, "max_pixels": 40_000_000}


def test_a_real_thumbnail_decodes_to_rgb(jpeg):
    img = decode_image(jpeg, **LIMITS)
    assert img.mode == "RGB"
    assert img.size[0] > 10 and img.size[1] > 10


def test_empty_bytes_are_invalid():
    with pytest.raises(InvalidImage):
        decode_image(b"", **LIMITS)


def test_garbage_is_invalid():
    with pytest.raises(InvalidImage):
        decode_image(b"this is not an image at all" * 100, **LIMITS)


def test_truncated_jpeg_is_invalid(jpeg):
    assert jpeg[:2] == b"\xff\xd8", "fixture should be a JPEG"
    with pytest.raises(InvalidImage):
        decode_image(jpeg[: len(jpeg) // 2], **LIMITS)


def test_bytes_over_the_limit_are_too_large(jpeg):
    with pytest.raises(PayloadTooLarge):
        decode_image(jpeg, max_bytes=len(jpeg) - 1, max_pixels=40_000_000)
    decode_image(jpeg, max_bytes=len(jpeg), max_pixels=40_000_000)  # exactly at the limit is fine


def test_png_bomb_is_refused_without_decoding(png_bomb):
    assert len(png_bomb) < 200_000
    started = time.perf_counter()
    with pytest.raises(PayloadTooLarge):
        decode_image(png_bomb, max_bytes=8 * 1024 * 1024, max_pixels=40_000_000)
    # Decoding 400 M pixels would take seconds and hundreds of MB; the header check does not.
    assert time.perf_counter() - started < 0.5


def test_pixel_limit_below_pillows_own_bomb_limit():
    """An image under Pillow's default bomb threshold but over the configured pixel limit."""
    buf = io.BytesIO()
    Image.new("L", (2000, 1000)).save(buf, "PNG")
    with pytest.raises(PayloadTooLarge):
        decode_image(buf.getvalue(), max_bytes=8 * 1024 * 1024, max_pixels=1_000_000)
    assert decode_image(buf.getvalue(), max_bytes=8 * 1024 * 1024, max_pixels=2_000_000).size == (
        2000,
        1000,
    )


def test_png_and_webp_are_accepted(jpeg):
    img = Image.open(io.BytesIO(jpeg))
    for fmt in ("PNG", "WEBP"):
        buf = io.BytesIO()
        img.save(buf, fmt)
        assert decode_image(buf.getvalue(), **LIMITS).size == img.size


def test_exif_orientation_is_applied(jpeg):
    """Phone photos are stored sideways with an EXIF Orientation tag; the decoded image must be
    upright, as the shopper saw it (the encoder is not rotation-invariant)."""
    upright = Image.open(io.BytesIO(jpeg)).convert("RGB")
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # the sensor's orientation
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    stored.save(buf, "JPEG", exif=exif, quality=95)
    img = decode_image(buf.getvalue(), **LIMITS)
    assert img.size == upright.size
    diff = np.abs(np.asarray(img, np.int16) - np.asarray(upright, np.int16)).mean()
    assert diff < 8, f"mean abs pixel difference {diff:.1f}: the image was not turned upright"


@pytest.mark.parametrize("data", ["not base64!!", "abc", "////====////"])
def test_invalid_base64_is_invalid_image(data):
    with pytest.raises(InvalidImage):
        decode_base64(data, 1 << 20)


def test_base64_round_trip_and_data_url(jpeg):
    b64 = base64.b64encode(jpeg).decode()
    assert decode_base64(b64, 1 << 20) == jpeg
    assert decode_base64(f"data:image/jpeg;base64,{b64}", 1 << 20) == jpeg


def test_base64_longer_than_the_limit_is_too_large(jpeg):
    b64 = base64.b64encode(jpeg).decode()
    with pytest.raises(PayloadTooLarge):
        decode_base64(b64, len(jpeg) // 2)


def test_large_jpeg_is_decoded_at_reduced_scale_but_not_below_min_side():
    """A phone photo is decoded no larger than the encoder needs (JPEG DCT scaling), keeps both
    sides >= min_side and the picture itself; the pixel limit still reads the declared size."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    big = Image.fromarray(small).resize((1600, 1200), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=95)
    data = buf.getvalue()
    img = decode_image(data, **LIMITS, min_side=112)
    assert img.size == (200, 150)  # 1/8 scale: the smallest that keeps both sides >= 112
    full = decode_image(data, **LIMITS).resize(img.size, Image.Resampling.BOX)
    diff = np.abs(np.asarray(img, np.int16) - np.asarray(full, np.int16)).mean()
    assert diff < 6, diff
    assert decode_image(data, **LIMITS, min_side=400).size == (800, 600)  # 1/2 scale
    with pytest.raises(PayloadTooLarge):
        decode_image(data, max_bytes=len(data), max_pixels=1_000_000, min_side=112)
