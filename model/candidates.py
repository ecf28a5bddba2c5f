"""What a head scores: the candidates' vectors and attribute codes, gathered from the index."""

from __future__ import annotations

import numpy as np
import torch

from model.catalog_view import ProductVectors
from model.head import Candidates, FusionHead


def candidates(
    index: ProductVectors, rows: np.ndarray, head: FusionHead, *, with_image: bool
) -> Candidates:
    """What `head` needs to score these index rows (image-side vectors only for image queries,
    attribute codes only for a head that reads them)."""
    agree = head.attributes
    return Candidates(
        text=torch.from_numpy(index.vectors("text", rows)),
        pimage=torch.from_numpy(index.vectors("pimage", rows)),
        has_image=torch.from_numpy(index.has_image(rows)),
        image=torch.from_numpy(index.vectors("image", rows)) if with_image else None,
        ptext=torch.from_numpy(index.vectors("ptext", rows)) if with_image else None,
        codes=agree.row_codes(index, rows) if agree else None,
    )
