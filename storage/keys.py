"""Content keys: the sha256 that names a text or an image everywhere (embedding cache, logged
query vectors, impressions), so the writer and the learner always agree."""

from __future__ import annotations

import hashlib


def content_key(data: bytes | str) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()
