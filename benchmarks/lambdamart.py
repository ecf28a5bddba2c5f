"""The strong baseline of the ablations: LightGBM LambdaMART on the same logged clicks.

Trained offline on a database the frozen head served (search, click, buy through the real API),
with the features our learner sees: the five frozen similarity channels (missing ones as NaN),
the bootstrap head's fused score, the attribute-agreement features (maps fitted on the catalog
exactly as a refresh fits them, and the photo's neighbours' votes), whether the product has an
image, and the query type. Labels are the logged grades (0 skip .. 3 purchase), one group per
engaged search. It is evaluated on the same evaluation shoppers as the served variants,
re-ranking the same FAISS candidate pool the service would (in process: LightGBM is not
something the service can serve).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from learner.child import child_head
from learner.dataset import load_searches, logged_query_vectors
from learner.features import build_features
from model.attributes import photo_votes
from model.candidates import candidates
from model.checkpoint import load_head
from model.head import QUERY_TYPES, FusionHead, photo_features, search_channels
from service.catalog.files import read_catalog
from service.catalog.index import CatalogIndex
from service.config import Settings
from service.encoding.embedder import Embedder
from service.learning import encoders_of
from shoppers.grades import Relevance, ndcg_at_10
from shoppers.intents import DEFAULT_MIX, Shoppers
from storage.artifacts import current


def _features(
    head: FusionHead, sims: torch.Tensor, mask: torch.Tensor, attr: torch.Tensor, qtype: int
) -> np.ndarray:
    """(n, F) for one search's candidates: channels, fused score, attributes, image, type."""
    fused = head.fuse(sims, mask, qtype)
    chans = sims.masked_fill(~mask, float("nan"))
    onehot = torch.zeros(len(sims), len(QUERY_TYPES))
    onehot[:, qtype] = 1
    has_image = mask[:, 3:4].float() if qtype else mask[:, 1:2].float()
    return torch.cat([chans, fused[:, None], attr, has_image, onehot], dim=1).detach().numpy()


class LambdaMart:
    def __init__(self, data_dir: Path, embedder: Embedder) -> None:
        self.settings = Settings(data_dir=data_dir)
        build = current(self.settings.index_dir)
        assert build is not None, f"no index in {data_dir}"
        self.index = CatalogIndex.load(build)
        boot, _ = load_head(data_dir / "heads" / self.index.meta["head_version"])
        self.head = child_head(boot, self.index, rank=0)  # the bootstrap + fitted attribute maps
        self.embedder = embedder
        self.model: Any = None

    def train(self, database: Path) -> dict[str, int]:
        import lightgbm as lgb

        grades = self.settings.event_grades
        engine = create_engine(f"sqlite:///{database}")
        with sessionmaker(engine)() as s:
            logs = load_searches(s, grades=grades, with_events_only=True)
            tv, iv, cv = logged_query_vectors(s, logs, encoders_of(self.index))
        engine.dispose()
        f, _ = build_features(
            self.head,
            logs,
            tv,
            iv,
            self.index,
            cv,
            per_channel=self.settings.candidates_per_channel,
        )
        b = f.batch
        xs, ys, groups = [], [], []
        for i in range(len(b)):
            m = int(b.valid[i].sum())
            sims, mask, attr = b.sims[i, :m], b.mask[i, :m], b.attr[i, :m]
            xs.append(_features(self.head, sims, mask, attr, int(b.qtype[i])))
            ys.append(b.grades[i, :m].numpy())
            groups.append(m)
        self.model = lgb.LGBMRanker(
            objective="lambdarank",
            n_estimators=300,
            learning_rate=0.05,
            num_leaves=31,
            min_child_samples=20,
            label_gain=[0, 1, 3, 7],
            verbose=-1,
        )
        self.model.fit(np.concatenate(xs), np.concatenate(ys), group=groups)
        return {"searches": len(groups), "rows": int(sum(groups))}

    @torch.inference_mode()
    def evaluate(
        self, catalog: Path, sessions: int, seed: int, photos: Mapping[str, Path] | None = None
    ) -> dict[str, float]:
        """NDCG@10 against true grades for the simulator's evaluation shoppers (same seeds)."""
        rows = read_catalog(catalog)
        relevance = Relevance([{"id": r.id, **r.attributes} for r in rows])
        shoppers = Shoppers(rows, DEFAULT_MIX, photos)
        agree, cfg = self.head.attributes, self.head.config
        assert agree is not None
        out: dict[str, list[float]] = defaultdict(list)
        for s in range(seed * 10_000_000, seed * 10_000_000 + sessions):
            intent = shoppers.draw(random.Random(s))
            qt = self.embedder.text_encoder.encode([intent.text])[0] if intent.text else None
            photo = None
            if intent.photo is not None:
                photo = self.embedder.decode(intent.photo.read_bytes())
            qv = self.embedder.image_encoder.encode([photo])[0] if photo is not None else None
            qc = self.embedder.colour(photo) if photo is not None else None
            q = self.head.query(
                None if qt is None else torch.from_numpy(qt),
                None if qv is None else torch.from_numpy(qv),
                None if qc is None else torch.from_numpy(qc),
            )
            n = self.settings.candidates_per_channel
            found = [self.index.search(sp, v.numpy(), n, None)[0] for sp, v in search_channels(q)]
            pool = np.unique(np.concatenate(found))
            c = candidates(self.index, pool, self.head, with_image=q.image is not None)
            sims, mask = self.head.channel_sims(q, c)
            assert c.codes is not None
            if qv is not None and q.pimage is not None:
                q.votes = photo_votes(agree, self.index, qv, q.pimage.numpy())
            attr = agree.features(
                q.text, photo_features(q.image, q.colour, cfg.colour_dim), c.codes, q.votes
            )
            x = _features(self.head, sims, mask, attr, q.type_index)
            top = pool[np.argsort(-self.model.predict(x), kind="stable")[:10]]
            g = relevance.grades(intent.target)
            shown = [int(g[relevance.pos[self.index.metas[r].id]]) for r in top]
            out[intent.kind].append(ndcg_at_10(shown, g))
        result = {k: float(np.mean(v)) for k, v in sorted(out.items())}
        result["all"] = float(np.mean(list(result.values())))
        return result
