"""What a search's scores are made of, per result (`explain=true`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from model.head import CHANNELS, MIX, Candidates, FusionHead, Query
from model.query_memory import Evidence, Lift


def explain(
    head: FusionHead,
    q: Query,
    cands: Candidates,
    parts: dict[str, torch.Tensor],
    rows: np.ndarray,
    lexical: tuple[np.ndarray, np.ndarray] | None,
) -> list[dict[str, Any]]:
    """Per candidate: each channel's score and its rank among this search's candidates (the
    lexical channel: BM25 and the rank in its own list, null when it did not find the product),
    the gate's fusion of the dense channels, the learned adjustment (interaction and attribute
    agreement), and the hybrid mix's weighted terms that make the final score."""
    sims, mask = head.channel_sims(q, cands)
    order = torch.argsort(torch.argsort(-sims.masked_fill(~mask, float("-inf")), dim=0), dim=0)
    lex_rank: dict[int, tuple[float, int]] = {}
    if lexical is not None:
        for rank, (r, s) in enumerate(zip(lexical[0].tolist(), lexical[1].tolist(), strict=True)):
            lex_rank[r] = (s, rank + 1)
    w = head.mix[q.type_index].tolist() if head.mix is not None else None
    out = []
    for i, row in enumerate(rows.tolist()):
        channels: dict[str, dict[str, Any]] = {
            name: {"score": float(sims[i, c]), "rank": int(order[i, c]) + 1}
            for c, name in enumerate(CHANNELS)
            if mask[i, c]
        }
        if lexical is not None:
            found = lex_rank.get(row)
            channels["lexical"] = {
                "score": found[0] if found else 0.0,
                "rank": found[1] if found else None,
            }
        values = [float(parts["dense"][i])]
        if cands.mix is not None:
            values += cands.mix[i].tolist()
        mix = (
            {n: {"weight": wt, "value": v} for n, wt, v in zip(MIX, w, values, strict=False)}
            if w is not None
            else None
        )
        out.append(
            {
                "channels": channels,
                "fused": float(parts["fused"][i]),
                "adjustment": float(parts["adjustment"][i]),
                "mix": mix,
            }
        )
    return out


def memory_detail(lift: Lift, recalled: Evidence) -> dict[str, Any]:
    """The memory term of one product: its lift and what it rests on."""
    return {
        "lift": lift.lift,
        "events": lift.events,
        "examinations": lift.exam,
        "rate": lift.rate,
        "product_rate": lift.product_rate,
        "borrowed_share": lift.borrowed_share,
        # how many, not which: other shoppers' queries are for GET /v1/memory's callers
        "similar_queries": len(recalled.neighbours),
    }
