"""The built-in encoders' ONNX graphs: exported from the packages' own weights on first use, an
int8 graph kept only where it passes the quality gate against fp32 PyTorch on the catalog's own
rows, and kept as checksummed artifacts in Settings.encoders_dir: one directory per model, whose
CURRENT names the graph in use (storage.artifacts).

The first load exports fp32, which needs no data; `fusionrank ingest` judges int8 on the catalog
it ingests, once per model (delete the model's directory to judge again).
"""

from __future__ import annotations

import logging
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from service.catalog.files import product_text
from service.config import Settings
from service.encoding import onnx
from service.encoding.encoders import (
    EfficientNetLite0ImageEncoder,
    MiniLMTextEncoder,
)
from service.encoding.images import decode_image
from service.errors import FusionrankError
from storage.artifacts import current, delete_artifact, read_manifest, write_artifact
from storage.errors import ArtifactError
from storage.products import ProductRecord

log = logging.getLogger(__name__)

# The gate, against fp32 PyTorch on the same inputs; an int8 graph must also answer a single
# query faster than the fp32 graph, measured side by side.
MIN_COSINE = 0.99
MIN_RECALL_AT_10 = 0.97
SAMPLE = 2000  # catalog rows the gate searches; queries come from other rows
PHOTOS = 1000  # of them, photos the image gate searches (three encoders each: the slow part)
QUERIES = 200
CALIBRATION = 128  # catalog photos that set the image graph's activation ranges
MIN_ROWS = 100  # a smaller sample judges nothing: the graph stays fp32

Encode = Callable[[Sequence[Any]], np.ndarray]
Export = Callable[[Path], None]  # writes a model's fp32 graph to the path
Judge = Callable[[Path], tuple[Path, "Choice"]]  # the chosen graph, written in the directory


@dataclass(frozen=True)
class Check:
    """One graph against fp32 PyTorch."""

    variant: str
    cosine: float  # mean over the catalog sample
    recall_at_10: float  # of PyTorch's ten nearest sample items per query
    query_ms: float  # median of one query, side by side with the other variant


@dataclass(frozen=True)
class Choice:
    """Which graph a model runs and why: what `fusionrank ingest` reports per model. No checks:
    int8 was not judged."""

    model: str
    variant: str  # "fp32" or "int8"
    reason: str
    checks: tuple[Check, ...] = ()


def text_graph(settings: Settings) -> tuple[Path, Choice]:
    """MiniLM's kept graph and its choice (its fp32 graph exported now on first use)."""
    return _loaded(settings, MiniLMTextEncoder.id, onnx.export_text)


def image_graph(settings: Settings) -> tuple[Path, Choice]:
    """EfficientNet-Lite0's, likewise, at the configured input size."""
    size = settings.image_size
    model = EfficientNetLite0ImageEncoder.id_for(size)
    return _loaded(settings, model, lambda out: onnx.export_image(size, out))


def text_encoder(settings: Settings) -> onnx.OnnxTextEncoder:
    graph, choice = text_graph(settings)
    return onnx.OnnxTextEncoder(graph, _encoder_id(choice), threads=_threads(settings))


def image_encoder(settings: Settings) -> onnx.OnnxImageEncoder:
    graph, choice = image_graph(settings)
    size = settings.image_size
    return onnx.OnnxImageEncoder(graph, _encoder_id(choice), size, threads=_threads(settings))


def judge(
    settings: Settings, rows: Sequence[ProductRecord], *, progress: bool = False
) -> dict[str, Choice]:
    """At ingest: per built-in model on ONNX, the graph it will run, int8 judged on `rows`
    unless that was done (or int8 is off, or `rows` are too few to judge by: then the kept
    graph stays). Custom encoders and the torch backend have none."""
    if settings.encoder_backend != "onnx":
        return {}
    sample = random.Random(0).sample(list(rows), min(len(rows), SAMPLE + QUERIES))
    size = settings.image_size
    judges: dict[str, tuple[str, Export, Judge, str | None]] = {}
    if settings.text_encoder == "minilm":
        few = len(sample) < QUERIES + MIN_ROWS
        judges["text"] = (
            MiniLMTextEncoder.id,
            onnx.export_text,
            lambda tmp: _judge_text(sample, settings, tmp),
            f"{len(sample)} products are too few to judge int8" if few else None,
        )
    if settings.image_encoder == "efficientnet-lite0":
        paths = [r.image_path for r in sample if r.image_path][: CALIBRATION + QUERIES + PHOTOS]
        few = len(paths) < CALIBRATION + 2 * MIN_ROWS
        judges["image"] = (
            EfficientNetLite0ImageEncoder.id_for(size),
            lambda out: onnx.export_image(size, out),
            lambda tmp: _judge_image(paths, settings, tmp),
            f"{len(paths)} products with a photo are too few to judge int8" if few else None,
        )
    out = {}
    for kind, (model, export, run, too_few) in tqdm(
        judges.items(), desc="judge int8", disable=not progress
    ):
        if too_few:  # the kept graph stays (fp32 if none)
            choice = _loaded(settings, model, export)[1]
            out[kind] = replace(choice, reason=f"{too_few}; {choice.reason}")
        else:
            out[kind] = _judged(settings, model, export, run)
        if progress:
            tqdm.write(f"{kind} encoder {model}: {out[kind].variant} ({out[kind].reason})")
    return out


# ---- the gate -----------------------------------------------------------------------------------
def similarity(
    reference: Encode, variant: Encode, catalog: Sequence[Any], queries: Sequence[Any]
) -> tuple[float, float]:
    """Mean cosine to the reference over the catalog, and recall@10 of the reference's ten
    nearest catalog items per query (each side searching its own vectors)."""
    ref_c, ref_q = reference(catalog), reference(queries)
    var_c, var_q = variant(catalog), variant(queries)
    cosine = float(np.mean(np.sum(ref_c * var_c, axis=1)))
    k = min(10, len(catalog))
    top_ref = np.argsort(-(ref_q @ ref_c.T), axis=1)[:, :k]
    top_var = np.argsort(-(var_q @ var_c.T), axis=1)[:, :k]
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(top_ref, top_var, strict=True)])
    return round(cosine, 4), round(float(recall), 4)


def query_ms(variants: Mapping[str, Encode], queries: Sequence[Any], blocks: int = 3) -> dict:
    """Median milliseconds of one query per variant, alternating variants block by block so
    that the machine's drift hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for encode in variants.values():
        encode(queries[:1])  # a session's first run allocates
    for _ in range(blocks):
        for name, encode in variants.items():
            for q in queries:
                started = time.perf_counter()
                encode([q])
                times[name].append((time.perf_counter() - started) * 1000)
    return {name: round(statistics.median(t), 3) for name, t in times.items()}


def _judge_text(
    rows: Sequence[ProductRecord], settings: Settings, tmp: Path
) -> tuple[Path, Choice]:
    fp32, int8 = tmp / "fp32.onnx", tmp / "int8.onnx"
    onnx.export_text(fp32)
    onnx.quantize_text(fp32, int8)
    catalog = [product_text(r.title, r.attributes, r.description) for r in rows[QUERIES:]]
    queries = [short_query(r.title) for r in rows[:QUERIES]]
    threads = _threads(settings)
    variants = {
        name: onnx.OnnxTextEncoder(path, name, threads=threads).encode
        for name, path in (("fp32", fp32), ("int8", int8))
    }
    checks = _checks(MiniLMTextEncoder().encode, variants, catalog, queries)
    return _choose(MiniLMTextEncoder.id, fp32, int8, checks)


def _judge_image(paths: Sequence[str], settings: Settings, tmp: Path) -> tuple[Path, Choice]:
    size = settings.image_size
    model = EfficientNetLite0ImageEncoder.id_for(size)
    fp32, int8 = tmp / "fp32.onnx", tmp / "int8.onnx"
    onnx.export_image(size, fp32)
    photos = [p for path in paths if (p := _photo(path, settings))]
    if len(photos) < CALIBRATION + 2 * MIN_ROWS:
        reason = f"{len(photos)} readable photos are too few to judge int8"
        return fp32, Choice(model, "fp32", reason)
    calibration, rest = photos[:CALIBRATION], photos[CALIBRATION:]
    onnx.quantize_image(fp32, int8, calibration, size)
    n = min(QUERIES, len(rest) // 4)
    threads = _threads(settings)
    variants = {
        name: onnx.OnnxImageEncoder(path, name, size, threads=threads).encode
        for name, path in (("fp32", fp32), ("int8", int8))
    }
    checks = _checks(EfficientNetLite0ImageEncoder(size).encode, variants, rest[n:], rest[:n])
    return _choose(model, fp32, int8, checks)


def short_query(title: str) -> str:
    """What a shopper types for a product: a few words of its title."""
    return " ".join(title.split()[:3])


def _checks(
    reference: Encode,
    variants: Mapping[str, Encode],
    catalog: Sequence[Any],
    queries: Sequence[Any],
) -> dict[str, Check]:
    speed = query_ms(variants, queries[:20])
    return {
        name: Check(name, *similarity(reference, encode, catalog, queries), speed[name])
        for name, encode in variants.items()
    }


def _choose(model: str, fp32: Path, int8: Path, checks: dict[str, Check]) -> tuple[Path, Choice]:
    exact, c = checks["fp32"], checks["int8"]
    if exact.cosine < 0.9999:  # the export itself is wrong, and nothing downstream would notice
        raise ArtifactError(f"{model}: the exported graph's vectors differ from PyTorch's "
                            f"(cosine {exact.cosine}); refusing it")  # fmt: skip
    misses = []
    if c.cosine < MIN_COSINE:
        misses.append(f"cosine {c.cosine} < {MIN_COSINE}")
    if c.recall_at_10 < MIN_RECALL_AT_10:
        misses.append(f"recall@10 {c.recall_at_10} < {MIN_RECALL_AT_10}")
    if c.query_ms >= exact.query_ms:
        misses.append(f"{c.query_ms} ms a query, fp32 {exact.query_ms} ms")
    both = (exact, c)
    if misses:
        return fp32, Choice(model, "fp32", f"int8 failed the gate ({'; '.join(misses)})", both)
    reason = f"int8 passed the gate (cosine {c.cosine}, recall@10 {c.recall_at_10})"
    return int8, Choice(model, "int8", reason, both)


def _photo(path: str, settings: Settings) -> Image.Image | None:
    """The photo as the encoders will see it (a square of the input size, so that thousands fit
    in memory), or None if it cannot be read; ingest itself reports those."""
    side = settings.image_size
    try:
        image = decode_image(
            Path(path).read_bytes(),
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
            min_side=2 * side,
        )
    except (OSError, FusionrankError):
        return None
    return image.convert("RGB").resize((side, side), Image.Resampling.BILINEAR)


# ---- artifacts ----------------------------------------------------------------------------------
def _root(settings: Settings, model: str) -> Path:
    return settings.encoders_dir / model


def _threads(settings: Settings) -> int:
    return settings.torch_threads or os.cpu_count() or 1


def _encoder_id(choice: Choice) -> str:
    """int8 vectors differ from fp32's, so cached vectors and indexes must not mix them; fp32
    ONNX gives PyTorch's vectors (cosine above 0.9999) and keeps its id."""
    return choice.model if choice.variant == "fp32" else f"{choice.model}+int8"


def _kept(root: Path) -> tuple[Path, Choice] | None:
    """The graph CURRENT names and its choice, verified; None if there is none or it fails
    verification (a graph is derived data: it is exported again)."""
    path = current(root)
    if path is None:
        return None
    try:
        raw = read_manifest(path)["choice"]
        checks = tuple(Check(**c) for c in raw["checks"])
        return path / onnx.GRAPH, Choice(raw["model"], raw["variant"], raw["reason"], checks)
    except (ArtifactError, KeyError, TypeError) as e:
        log.warning("encoder graph %s: %s; exporting it again", path, e)
        return None


def _loaded(settings: Settings, model: str, export: Export) -> tuple[Path, Choice]:
    """The model's kept graph; on first use its fp32 graph, exported now (judged at ingest)."""
    root = _root(settings, model)
    kept = _kept(root)
    if kept is not None:
        return kept
    broken = current(root)  # None, or one that failed verification
    with tempfile.TemporaryDirectory(prefix=".export-", dir=_made(root)) as tmp:
        graph = Path(tmp) / "fp32.onnx"
        export(graph)
        choice = Choice(model, "fp32", "int8 not judged yet (at ingest)")
        return _keep(root, graph, choice, retire=[broken] if broken else [])


def _judged(settings: Settings, model: str, export: Export, run: Judge) -> Choice:
    """The kept choice if it stands (int8 judged, or int8 off and fp32 kept), else judged now."""
    root = _root(settings, model)
    kept = _kept(root)
    if kept is not None:
        judged, fp32 = bool(kept[1].checks), kept[1].variant == "fp32"
        if (settings.encoder_int8 and judged) or (not settings.encoder_int8 and fp32):
            return kept[1]
    before = [p for p in _made(root).iterdir() if p.is_dir() and not p.name.startswith(".")]
    with tempfile.TemporaryDirectory(prefix=".export-", dir=root) as tmp:
        if settings.encoder_int8:
            graph, choice = run(Path(tmp))
        else:
            graph, choice = Path(tmp) / "fp32.onnx", Choice(model, "fp32", "int8 is off")
            export(graph)
        return _keep(root, graph, choice, retire=before)[1]


def _made(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return root


def _keep(
    root: Path, graph: Path, choice: Choice, *, retire: Sequence[Path]
) -> tuple[Path, Choice]:
    """`graph` as a new artifact that CURRENT names, and the artifacts in `retire` deleted: a
    broken one, or at ingest every one judged before (replicas that loaded one hold it in
    memory; one starting during that ingest's judging may have to be restarted)."""

    def write(tmp: Path) -> None:
        os.replace(graph, tmp / onnx.GRAPH)

    name = f"{choice.variant}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    path = write_artifact(root, name, write, {"choice": asdict(choice)})
    for old in retire:
        delete_artifact(root, old.name)
    return path / onnx.GRAPH, choice
