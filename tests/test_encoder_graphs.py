"""The encoders' ONNX graphs as the service keeps them: exported on first use, verified on every
load, int8 judged by the gate at ingest on the catalog's own rows and reported there, and the
choice kept; PyTorch stays available by configuration."""

from __future__ import annotations

import json
import logging

import pytest
from helpers import ingest_into, make_settings, write_catalog

from service.catalog.files import read_catalog
from service.encoding import export
from service.encoding.embedder import make_embedder
from service.encoding.encoders import MiniLMTextEncoder, load_text_encoder
from service.encoding.onnx import OnnxTextEncoder
from storage.artifacts import current

pytestmark = pytest.mark.slow


def test_a_graph_is_exported_on_first_use_and_again_when_it_fails_its_checksum(tmp_path, caplog):
    settings = make_settings(tmp_path / "data", encoder_dir=tmp_path / "encoders")
    first = load_text_encoder(settings)
    assert isinstance(first, OnnxTextEncoder) and first.id == MiniLMTextEncoder.id
    kept = current(tmp_path / "encoders" / MiniLMTextEncoder.id)
    assert kept is not None and kept.name.startswith("fp32-")
    assert json.loads((kept / "manifest.json").read_text())["choice"]["checks"] == []
    assert load_text_encoder(settings).id == first.id
    assert current(tmp_path / "encoders" / MiniLMTextEncoder.id) == kept  # loaded, not exported

    with (kept / "model.onnx").open("r+b") as f:  # one flipped byte
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with caplog.at_level(logging.WARNING, logger="service.encoding.export"):
        again = load_text_encoder(settings)
    assert "sha256" in caplog.text
    replaced = current(tmp_path / "encoders" / MiniLMTextEncoder.id)
    assert replaced is not None and replaced != kept and not kept.exists()
    assert (again.encode(["red shoe"]) @ first.encode(["red shoe"]).T)[0, 0] > 0.9999

    torch_settings = settings.model_copy(update={"encoder_backend": "torch"})
    assert isinstance(load_text_encoder(torch_settings), MiniLMTextEncoder)


def test_ingest_judges_int8_by_the_gate_reports_it_and_keeps_the_choice(source_rows, tmp_path):
    rows = source_rows[:340]  # enough to judge both models (export.MIN_ROWS and the rest)
    csv_path = write_catalog(rows, tmp_path / "catalog.csv")
    settings = make_settings(tmp_path / "data", encoder_dir=tmp_path / "enc")
    report = ingest_into(settings, csv_path, None)

    assert set(report.encoders) == {"text", "image"}
    for kind, choice in report.encoders.items():
        fp32, int8 = choice.checks
        assert fp32.variant == "fp32" and fp32.cosine >= 0.9999 and fp32.recall_at_10 >= 0.99
        assert int8.variant == "int8" and 0.5 < int8.cosine < 1.0 and int8.query_ms > 0
        passes = (
            int8.cosine >= export.MIN_COSINE
            and int8.recall_at_10 >= export.MIN_RECALL_AT_10
            and int8.query_ms < fp32.query_ms
        )
        assert choice.variant == ("int8" if passes else "fp32"), (kind, choice)
        assert ("passed" if passes else "failed") in choice.reason
    # the index was built by the graphs chosen, under ids that keep int8 vectors apart
    embedder = make_embedder(settings)
    assert embedder.text_encoder.id.endswith("+int8") == (report.encoders["text"].variant == "int8")
    kept = current(tmp_path / "enc" / MiniLMTextEncoder.id)

    again = export.judge(settings, read_catalog(csv_path))
    assert again == report.encoders  # judged once, not at every ingest
    assert current(tmp_path / "enc" / MiniLMTextEncoder.id) == kept
