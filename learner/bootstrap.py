"""Bootstrap the fusion head from the catalog alone: align each product's image with its text.

Symmetric InfoNCE (CLIP-style) on cached frozen features, with in-batch negatives; then calibrate
each similarity channel's mean and spread on random catalog pairs so the gate mixes comparable
numbers. Seconds to a minute on 2 cores for 44k products.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from model.head import Candidates, FusionHead, HeadConfig, Query, search_channels

MIN_PAIRS = 100  # fewer (image, title) pairs cannot align the two spaces: no training then
# Catalog rows projected at a time, and pseudo-queries scored at a time (64), when fitting the
# gate: at a million products, all at once held 4 GB of hidden activations and 2.4 GB of scores
# beside the catalog (docs/benchmarks.md, "A million products through HTTP").
CHUNK = 65_536


@dataclass(frozen=True)
class BootstrapReport:
    epochs: int
    pairs: int  # (image, title) pairs trained on; 0 for a catalog with (almost) no photos
    final_loss: float | None  # None when nothing was trained
    heldout_recall_at_10: float | None  # image->text, among the held-out pairs
    seconds: float


def bootstrap_head(
    text: np.ndarray,
    image: np.ndarray,
    has_image: np.ndarray,
    config: HeadConfig,
    *,
    epochs: int = 8,
    max_steps: int | None = None,
    batch_size: int = 1024,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
) -> tuple[FusionHead, BootstrapReport]:
    """`epochs` passes over the pairs, but at most `max_steps` batches (None: no limit)."""
    assert text.ndim == 2 and text.shape[1] == config.text_dim and text.dtype == np.float32
    assert image.shape == (text.shape[0], config.image_dim) and image.dtype == np.float32
    started = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    head = FusionHead(config)
    rows = np.flatnonzero(has_image)
    rng.shuffle(rows)
    if len(rows) < MIN_PAIRS:  # a titles-only catalog: its text channels need no alignment
        calibrate(head, text, image, has_image, seed=seed)
        return head, BootstrapReport(0, 0, None, None, time.perf_counter() - started)
    n_held = min(1000, len(rows) // 10)
    held, train = rows[:n_held], rows[n_held:]
    t_all, v_all = torch.from_numpy(text), torch.from_numpy(image)
    steps = max(1, epochs * max(1, len(train) // batch_size))
    steps = min(steps, max_steps) if max_steps else steps
    loss = _align(
        head,
        t_all,
        v_all,
        train,
        rng,
        epochs=epochs,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        progress=progress,
    )
    recall = _heldout_recall(head, t_all[held], v_all[held])
    calibrate(head, text, image, has_image, seed=seed)
    report = BootstrapReport(epochs, len(train), loss, recall, time.perf_counter() - started)
    return head, report


def _align(
    head: FusionHead,
    t_all: torch.Tensor,
    v_all: torch.Tensor,
    train: np.ndarray,
    rng: np.random.Generator,
    *,
    epochs: int,
    steps: int,
    batch_size: int,
    lr: float,
    progress: bool,
) -> float:
    """Train the projections on the `train` rows' (image, title) pairs for at most `steps`
    batches; returns the last batch's loss (nan if none ran). The gate is left to fit_gate."""
    params = [p for n, p in head.named_parameters() if p.requires_grad and n != "gate_logits"]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    loss_val = float("nan")
    head.train()
    bar = tqdm(total=steps, desc="bootstrap head", unit="step", disable=not progress)
    step = 0
    for _ in range(epochs):
        perm = rng.permutation(train)
        for i in range(0, len(perm) - batch_size + 1 if len(perm) >= batch_size else 1, batch_size):
            if step >= steps:
                break
            idx = torch.from_numpy(perm[i : i + batch_size])
            loss = _info_nce(head, t_all[idx], v_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            loss_val = float(loss.detach())
            bar.set_postfix(loss=f"{loss_val:.3f}")
            bar.update()
    bar.close()
    head.eval()
    return loss_val


def _info_nce(head: FusionHead, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: each photo's own title against the batch's others, and vice versa."""
    pt, pv = head.project_text(t), head.project_image(v)
    logits = head.logit_scale.exp().clamp(max=100) * pv @ pt.T
    target = torch.arange(len(t))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


@torch.no_grad()
def _heldout_recall(head: FusionHead, t: torch.Tensor, v: torch.Tensor, k: int = 10) -> float:
    sims = head.project_image(v) @ head.project_text(t).T
    topk = sims.topk(min(k, sims.shape[1]), dim=1).indices
    return float((topk == torch.arange(len(t))[:, None]).any(dim=1).float().mean())


@torch.no_grad()
def calibrate(
    head: FusionHead,
    text: np.ndarray,
    image: np.ndarray,
    has_image: np.ndarray,
    *,
    n_queries: int = 256,
    n_candidates: int = 2048,
    seed: int = 0,
) -> None:
    """Set each channel's mean/std from catalog products used as queries against random others."""
    rng = np.random.default_rng(seed + 1)
    with_img = np.flatnonzero(has_image)
    if len(with_img) < 2:
        return
    qs = rng.choice(with_img, size=min(n_queries, len(with_img)), replace=False)
    cs = rng.choice(len(text), size=min(n_candidates, len(text)), replace=False)
    t, v = torch.from_numpy(text[cs]), torch.from_numpy(image[cs])
    cands = Candidates(
        text=t,
        pimage=head.project_image(v),
        has_image=torch.from_numpy(has_image[cs]),
        image=v,
        ptext=head.project_text(t),
    )
    all_sims, all_mask = [], []
    for q in qs:
        sims, mask = head.channel_sims(
            Query(torch.from_numpy(text[q]), torch.from_numpy(image[q])), cands
        )
        all_sims.append(sims)
        all_mask.append(mask)
    sims, mask = torch.cat(all_sims), torch.cat(all_mask)
    for j in range(sims.shape[1]):
        col = sims[mask[:, j], j]
        if col.numel() > 1:
            head.chan_mean[j] = col.mean()
            head.chan_std[j] = col.std().clamp(min=1e-3)


@dataclass
class PseudoQueries:
    """Catalog-made queries for fitting the gate (see `make_pseudo_queries`).

    Each type has target attribute codes (B, A), -2 where the query does not ask for an attribute.
    """

    text_vecs: np.ndarray  # (Bt, text_dim) encoded attribute phrases
    text_targets: np.ndarray
    image_rows: np.ndarray  # (Bi,) products whose (re-photographed) image is the query
    image_vecs: np.ndarray  # (Bi, image_dim) the query photos: flipped, cropped product images
    image_targets: np.ndarray
    composed_rows: np.ndarray  # (Bc,) a photo of this product ...
    composed_image_vecs: np.ndarray
    composed_vecs: np.ndarray  # ... plus an encoded phrase changing one attribute
    composed_targets: np.ndarray


def attribute_codes(
    attrs: list[dict[str, str]], keys: list[str]
) -> tuple[np.ndarray, list[list[str]]]:
    """Integer codes (n, len(keys)) of categorical attributes (-1 = missing) and vocabularies."""
    codes = np.full((len(attrs), len(keys)), -1, np.int32)
    vocabs: list[list[str]] = []
    for j, key in enumerate(keys):
        vocab: dict[str, int] = {}
        for i, a in enumerate(attrs):
            v = a.get(key)
            if v:
                codes[i, j] = vocab.setdefault(v, len(vocab))
        vocabs.append(list(vocab))
    return codes, vocabs


def make_pseudo_queries(
    codes: np.ndarray,
    vocabs: list[list[str]],
    has_image: np.ndarray,
    *,
    n: int = 1000,
    seed: int = 0,
) -> tuple[list[str], list[str], dict[str, np.ndarray]]:
    """Queries made from the catalog's own attribute values, no hand-written phrasing.

    text: the values of 1-3 random attributes of a random product ("Red Dresses Women"), relevant =
    products sharing them; image: a product's image, relevant = products sharing its attributes;
    composed: a product's image plus the one attribute value in which a real sibling product
    differs, relevant = products like it with that value. Returns the text phrases, composed
    phrases and index arrays; the caller encodes phrases and re-photographs the images.
    """
    rng = np.random.default_rng(seed + 3)
    n_items, n_attr = codes.shape
    text_src = rng.integers(0, n_items, size=n)
    text_targets = np.full((n, n_attr), -2, np.int32)
    phrases = []
    for b, src in enumerate(text_src):
        present = np.flatnonzero(codes[src] >= 0)
        pick = rng.choice(present, size=min(len(present), int(rng.integers(1, 4))), replace=False)
        text_targets[b, pick] = codes[src, pick]
        phrases.append(" ".join(vocabs[j][codes[src, j]] for j in rng.permutation(pick)))
    with_img = np.flatnonzero(has_image)
    image_rows = rng.choice(with_img, size=min(n, len(with_img)), replace=False)
    comp_rows = rng.choice(with_img, size=min(n, len(with_img)), replace=False)
    comp_targets = codes[comp_rows].copy()
    comp_phrases, keep = [], []
    for b, src in enumerate(comp_rows):
        # a real sibling: another product differing from this one in exactly one attribute
        siblings = np.flatnonzero((codes != codes[src]).sum(axis=1) == 1)
        if not len(siblings):
            continue
        sib = int(rng.choice(siblings))
        j = int(np.flatnonzero(codes[sib] != codes[src])[0])
        if codes[sib, j] < 0:
            continue
        comp_targets[b, j] = codes[sib, j]
        comp_phrases.append(vocabs[j][codes[sib, j]])
        keep.append(b)
    arrays = {
        "text_targets": text_targets,
        "image_rows": image_rows,
        "image_targets": codes[image_rows],
        "composed_rows": comp_rows[keep],
        "composed_targets": comp_targets[keep],
    }
    return phrases, comp_phrases, arrays


def fit_gate(
    head: FusionHead,
    text: np.ndarray,
    image: np.ndarray,
    has_image: np.ndarray,
    codes: np.ndarray,
    pq: PseudoQueries,
    *,
    per_channel: int = 50,
    steps: int = 200,
    progress: bool = True,
) -> float:
    """Fit only the per-query-type gate logits on catalog pseudo-queries (listwise softmax loss).

    Candidates are what the search channels would retrieve; a candidate's relevance is the share
    of the asked-for attributes it has. Projections and calibration stay fixed. Returns the loss.
    """
    batches = _gate_batches(head, text, image, has_image, codes, pq, per_channel)
    gate = head.gate_logits
    gate.requires_grad_(True)
    scale = torch.nn.Parameter(torch.full((3,), 3.0))
    opt = torch.optim.Adam([gate, scale], lr=0.05)
    loss_val = float("nan")
    for _ in tqdm(range(steps), desc="fit gate", unit="step", disable=not progress):
        total = torch.zeros(())
        for qtype, sims, mask, rel in batches:
            score = head.fuse(sims, mask, qtype) * scale[qtype]
            valid = torch.isfinite(rel)
            log_p = torch.log_softmax(score.masked_fill(~valid, float("-inf")), dim=1)
            target = torch.softmax((rel * 10).masked_fill(~valid, float("-inf")), dim=1)
            total = total - (target * log_p.nan_to_num(0.0, neginf=0.0)).sum(1).mean()
        opt.zero_grad()
        total.backward()
        opt.step()
        loss_val = float(total.detach())
    gate.requires_grad_(False)
    return loss_val


def _gate_batches(
    head: FusionHead,
    text: np.ndarray,
    image: np.ndarray,
    has_image: np.ndarray,
    codes: np.ndarray,
    pq: PseudoQueries,
    per_channel: int,
) -> list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per query type with pseudo-queries: (type, channel sims, mask, relevance) of what the
    search channels would retrieve for them."""
    with torch.no_grad():
        T, V = torch.from_numpy(text), torch.from_numpy(image)
        PT = torch.cat([head.project_text(t) for t in T.split(CHUNK)])
        PV = torch.cat([head.project_image(v) for v in V.split(CHUNK)])
    hi = torch.from_numpy(has_image)
    batches = []
    specs = [
        (0, torch.from_numpy(pq.text_vecs), None, pq.text_targets, None),
        (1, None, torch.from_numpy(pq.image_vecs), pq.image_targets, None),
        (
            2,
            torch.from_numpy(pq.composed_vecs),
            torch.from_numpy(pq.composed_image_vecs),
            pq.composed_targets,
            pq.composed_rows,
        ),
    ]
    for qtype, qt, qv, targets, exclude in specs:
        if len(targets) == 0:
            continue
        with torch.no_grad():
            q = head.query(qt, qv)
            sims, mask, cand = _batch_channels(head, q, T, V, PT, PV, hi, per_channel)
        cand_np = cand.numpy()
        asked = targets >= -1
        match = (codes[cand_np] == targets[:, None, :]) & asked[:, None, :]
        rel = match.sum(2) / np.maximum(asked.sum(1), 1)[:, None]
        if exclude is not None:  # the photographed product lacks the asked-for change
            rel = np.where(cand_np == exclude[:, None], -np.inf, rel)
        batches.append((qtype, sims, mask, torch.from_numpy(rel).float()))
    return batches


def _batch_channels(
    head: FusionHead,
    q: Query,
    T: torch.Tensor,
    V: torch.Tensor,
    PT: torch.Tensor,
    PV: torch.Tensor,
    hi: torch.Tensor,
    per_channel: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched version of the serving path: channel candidates, then (B, M, C) sims and masks."""
    index = {"text": T, "ptext": PT, "pimage": PV}
    k = min(per_channel, T.shape[0])
    cand = torch.cat(
        [
            torch.cat([(v @ index[space].T).topk(k, dim=1).indices for v in vec.split(64)])
            for space, vec in search_channels(q)
        ],
        dim=1,
    )
    sims = torch.zeros(*cand.shape, 5)
    mask = torch.zeros(*cand.shape, 5, dtype=torch.bool)
    if q.text is not None:
        sims[..., 0] = torch.einsum("bmd,bd->bm", T[cand], q.text)
        sims[..., 1] = torch.einsum("bmd,bd->bm", PV[cand], q.ptext)
        mask[..., 0], mask[..., 1] = True, hi[cand]
    if q.image is not None:
        sims[..., 2] = torch.einsum("bmd,bd->bm", V[cand], q.image)
        sims[..., 3] = torch.einsum("bmd,bd->bm", PV[cand], q.pimage)
        sims[..., 4] = torch.einsum("bmd,bd->bm", PT[cand], q.pimage)
        mask[..., 2], mask[..., 3], mask[..., 4] = hi[cand], hi[cand], True
    return sims, mask, cand
