"""Head versions on disk and in the registry: bootstrap registration and retention."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from model.checkpoint import WEIGHTS
from storage.artifacts import delete_artifact, read_manifest
from storage.models import VersionStatus
from storage.registry import VersionIn, active_version, register_version, versions_past


def register_bootstrap(session: Session, root: Path, version: str) -> None:
    """Record a head built at ingest in the registry (once; versions are immutable)."""
    weights_sha = read_manifest(root / version)["files"][WEIGHTS]
    register_version(
        session=session,
        v=VersionIn(
            version=version,
            parent=None,
            status=VersionStatus.BOOTSTRAP,
            artifact_sha256=weights_sha,
            reason="bootstrapped from the catalog at ingest",
        ),
    )


def prune_heads(session: Session, root: Path, keep: int) -> list[str]:
    """Delete the artifacts of all versions but the newest `keep`, the bootstrap heads (every
    refresh falls back on them) and the active one, so that hourly refreshes do not fill the disk.
    Their registry rows, with reasons and metrics, stay; such a version can no longer be activated.
    Returns the versions whose files were deleted."""
    pruned = []
    for version in versions_past(session=session, keep=keep):
        session.rollback()  # a fresh read: an operator may have activated it meanwhile
        if active_version(session=session) != version and delete_artifact(root, version):
            pruned.append(version)
    return pruned
