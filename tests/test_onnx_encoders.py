"""The ONNX Runtime encoders against the PyTorch ones they are exported from, on real catalog
rows: fp32 gives the same vectors, int8 nearly."""

from __future__ import annotations

import numpy as np
from PIL import Image

from service.encoding import onnx
from service.encoding.encoders import (
    EfficientNetLite0ImageEncoder,
    MiniLMTextEncoder,
)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


def test_the_text_graph_gives_pytorch_s_vectors_and_int8_nearly(catalog_rows, tmp_path):
    torch_text = MiniLMTextEncoder()
    # real titles, a one-word query and one the tokenizer truncates
    titles = [r["productDisplayName"] for r in catalog_rows[:60]] + ["a", "red " * 300]
    onnx.export_text(tmp_path / "text.onnx")
    onnx.quantize_text(tmp_path / "text.onnx", tmp_path / "text.int8.onnx")
    expected = torch_text.encode(titles)
    fp32 = onnx.OnnxTextEncoder(tmp_path / "text.onnx", "t", threads=1)
    int8 = onnx.OnnxTextEncoder(tmp_path / "text.int8.onnx", "t8", threads=1)
    got = fp32.encode(titles)
    assert got.shape == (len(titles), 384) and got.dtype == np.float32
    assert _cosines(got, expected).min() > 0.9999
    assert _cosines(int8.encode(titles), expected).mean() > 0.98
    assert fp32.encode([]).shape == (0, 384)


def test_the_image_graph_gives_pytorch_s_vectors_and_int8_nearly(catalog_rows, tmp_path):
    torch_image = EfficientNetLite0ImageEncoder(112)
    images = [Image.open(r["image_path"]).convert("RGB") for r in catalog_rows[:40]]
    onnx.export_image(torch_image.input_size, tmp_path / "image.onnx")
    onnx.quantize_image(tmp_path / "image.onnx", tmp_path / "image.int8.onnx", images, 112)
    expected = torch_image.encode(images)
    fp32 = onnx.OnnxImageEncoder(tmp_path / "image.onnx", "i", 112, threads=1)
    int8 = onnx.OnnxImageEncoder(tmp_path / "image.int8.onnx", "i8", 112, threads=1)
    assert fp32.input_size == torch_image.input_size
    assert _cosines(fp32.encode(images), expected).min() > 0.9999
    # 7-bit weights (onnx.quantize_image): 0.96 on an AVX2-only CPU, where 8-bit ones gave 0.82
    assert _cosines(int8.encode(images), expected).mean() > 0.95
