"""Head checkpoints: safetensors weights plus a JSON model card, atomic and verified on load."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from model.engagement import Engagement
from model.head import MIX, MIX_START, QUERY_TYPES, FusionHead, HeadConfig
from storage.artifacts import read_manifest, write_artifact
from storage.errors import ArtifactError

WEIGHTS = "head.safetensors"
CARD = "head.json"
ENGAGEMENT = "engagement.json"  # model.engagement's table, when a refresh computed one


def _weights_digest(head: FusionHead) -> str:
    """Of everything that decides a ranking: the weights and the engagement table."""
    h = hashlib.sha256()
    for name, tensor in sorted(head.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().contiguous().numpy().tobytes())
    if head.engagement is not None:
        h.update(head.engagement.to_json().encode())
    return h.hexdigest()


def save_head(root: Path, head: FusionHead, card: dict[str, Any]) -> str:
    """Store a new immutable head version; returns its version string (from the weights' hash).
    Which version serves is the registry's business (storage.registry), not a file's."""
    version = f"h-{_weights_digest(head)[:12]}"
    if (root / version).exists():
        load_head(root / version)  # same weights already stored: verify them, reuse them
        return version
    full_card = {
        **card,
        "version": version,
        "config": head.config.to_dict(),
        "gate": head.gate_weights(),
        "created_at": datetime.now(UTC).isoformat(),
    }

    def write(tmp: Path) -> None:
        state = {k: v.detach().contiguous() for k, v in head.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS), metadata={"version": version})
        (tmp / CARD).write_text(json.dumps(full_card, indent=2, sort_keys=True))
        if head.engagement is not None:
            (tmp / ENGAGEMENT).write_text(head.engagement.to_json())

    write_artifact(root, version, write, {"kind": "fusion-head"}, make_current=False)
    return version


def _from_older(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A head saved before the mix had all of MIX's terms gets the missing ones at their
    starting weights: it ranked without them, and they are 0 where they have nothing to say."""
    mix = state.get("mix")
    if mix is not None and mix.shape[1] < len(MIX):
        start = torch.tensor([MIX_START[t] for t in QUERY_TYPES], dtype=mix.dtype)
        state = {**state, "mix": torch.cat([mix, start[:, mix.shape[1] :]], dim=1)}
    return state


def load_head(path: Path) -> tuple[FusionHead, dict[str, Any]]:
    """Load a head; a missing or corrupt file raises ArtifactError and nothing is loaded."""
    files = read_manifest(path).get("files", {})
    try:
        card: dict[str, Any] = json.loads((path / CARD).read_text())
        head = FusionHead(HeadConfig(**card["config"]))
        state = _from_older(load_file(str(path / WEIGHTS)))
        head.load_state_dict(state, strict=True)
        if ENGAGEMENT in files:
            head.engagement = Engagement.from_json((path / ENGAGEMENT).read_text())
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise ArtifactError(f"head {path.name} cannot be loaded: {e}") from e
    head.eval()
    for p in head.parameters():
        p.requires_grad_(False)
    return head, card
