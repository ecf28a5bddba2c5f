"""The composition root of `fusionrank learner`: what refreshing needs and nothing a search
does (no searcher, no query encoders until a catalog change needs them), and the learner's
configuration from the settings, shared with an in-process learner."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from learner.dataset import Encoders
from learner.refresh import RefreshConfig
from learner.train import TrainConfig
from learner.versions import register_bootstrap
from learner.worker import Learner, WorkerConfig
from model.checkpoint import load_head
from model.head import FusionHead
from model.query_memory import MemoryConfig
from service.catalog.index import CatalogIndex
from service.catalog.vectors import VectorBackend, VectorConfig, open_backend
from service.catalog.writer import CatalogWriter
from service.config import Settings
from service.encoding.embedder import make_embedder
from service.polling import Poller
from service.search.memory_fold import FoldConfig, MemoryFold
from service.threads import ThreadPolicy
from storage.artifacts import current
from storage.db import make_engine, migrate, session_factory, transaction
from storage.registry import active_version, set_active


def learner_config(settings: Settings, **train: Any) -> WorkerConfig:
    """The learner's configuration from the settings, the one place their defaults live.
    `train`: TrainConfig fields to override (a benchmark's ablation switches a feature off)."""
    return WorkerConfig(
        interval_minutes=settings.learner_interval_minutes,
        min_new_events=settings.learner_min_new_events,
        poll_seconds=settings.learner_poll_seconds,
        lease_seconds=settings.lease_seconds,
        retention_days=settings.retention_days,
        torch_threads=ThreadPolicy.batch(settings).refresh_threads,  # serving passes its share
        heads_dir=settings.data_dir / "heads",
        refresh=RefreshConfig(
            event_grades=settings.event_grades,
            settle=timedelta(seconds=settings.learner_settle_seconds),
            holdout_fraction=settings.learner_holdout_fraction,
            min_new_engaged=settings.learner_min_engaged,
            min_holdout_engaged=settings.learner_min_holdout_engaged,
            keep_holdout_engaged=settings.learner_keep_holdout_engaged,
            replay=settings.learner_replay,
            max_window=settings.learner_max_window,
            margin=settings.promotion_margin,
            confidence=settings.promotion_confidence,
            min_shown_share=settings.learner_min_shown_share,
            per_channel=settings.candidates_per_channel,
            keep_heads=settings.learner_keep_heads,
            train=replace(TrainConfig(ips_clip=settings.learner_ips_clip), **train),
        ),
    )


def memory_config(settings: Settings) -> MemoryConfig:
    """How every process reads the query memory."""
    return MemoryConfig(
        half_life_days=settings.memory_half_life_days,
        prior=settings.memory_prior,
        similar_floor=settings.memory_similar_floor,
        photo_floor=settings.memory_photo_floor,
    )


def memory_fold(
    settings: Settings, sessions: sessionmaker[Session], encoders: Encoders
) -> MemoryFold:
    """What folds the logs into the query memory: any process that learns (one at a time)."""
    config = FoldConfig(
        grades=settings.event_grades,
        half_life_days=settings.memory_half_life_days,
        text_encoder=encoders.text_id,
        image_encoder=encoders.image_id,
        retention_days=settings.retention_days,
        max_pairs=settings.memory_max_pairs,
        analytics_days=settings.analytics_retention_days,
    )
    return MemoryFold(sessions, config, lease_seconds=settings.lease_seconds)


@dataclass(frozen=True)
class Catalog:
    index: CatalogIndex
    head: FusionHead  # the head built with the index
    version: str  # its version
    active: str  # the registry's active version (this one when the registry named none)


def load_catalog(
    settings: Settings, sessions: sessionmaker[Session], backend: VectorBackend
) -> Catalog | str:
    """The CURRENT index build (its vectors opened through `backend`), the head built with it
    (registered, and made active when the registry has none) and the active version, or why
    there is none."""
    build = current(settings.index_dir)
    if build is None:
        return f"no index in {settings.index_dir}; run `fusionrank ingest CATALOG.csv` first"
    index = CatalogIndex.load(build, backend=backend, exact_limit=settings.exact_filter_limit)
    heads, version = settings.data_dir / "heads", index.meta["head_version"]
    head, _card = load_head(heads / version)
    with transaction(sessions) as s:  # databases from before the registry, or a copied build
        register_bootstrap(s, heads, version)
        active = active_version(session=s)
        if active is None:
            set_active(session=s, version=version)
    return Catalog(index, head, version, active or version)


def encoders_of(index: CatalogIndex) -> Encoders:
    """Which logged query vectors the learner reads: those of the encoders the index was built
    with (serving refuses an index whose encoders it does not run)."""
    built: dict[str, str] = index.meta.get("encoders") or {}
    colour = built.get("colour") if index.dim("colour") else None
    return Encoders(
        built.get("text", ""),
        index.dim("text"),
        built.get("image", ""),
        index.dim("image"),
        colour,
        index.dim("colour") if colour else 0,
    )


@dataclass
class LearnerProcess:
    """Everything `fusionrank learner` holds."""

    engine: Engine
    sessions: sessionmaker[Session]
    vectors: VectorBackend
    learner: Learner
    follower: Poller  # it trains on products other processes add too
    memory: MemoryFold  # folds the logs into the query memory
    memory_seconds: float

    def start(self) -> None:
        self.learner.start_scheduler()
        self.follower.start()
        self.memory.start(self.memory_seconds)

    def close(self) -> None:
        self.follower.stop()
        self.memory.stop()
        self.learner.close()
        self.vectors.close()
        self.engine.dispose()


def start_learner(settings: Settings, config: WorkerConfig | None = None) -> LearnerProcess | str:
    """The learner process's parts, or why it cannot start (no index yet)."""
    migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    sessions = session_factory(engine)
    vectors = open_backend(VectorConfig.of(settings))
    loaded = load_catalog(settings, sessions, vectors)
    if isinstance(loaded, str):
        vectors.close()
        engine.dispose()
        return loaded
    index, head, version = loaded.index, loaded.head, loaded.version
    writer = CatalogWriter(
        sessions=sessions,
        embedder=lambda: make_embedder(settings),
        index=index,
        head=head,
        images_dir=settings.images_dir,
    )
    writer.reconcile()
    encoders = encoders_of(index)
    learner = Learner(
        config or learner_config(settings), sessions, index, encoders, fallback_version=version
    )
    follower = Poller("catalog-follower", writer.reconcile, settings.catalog_poll_seconds)
    fold = memory_fold(settings, sessions, encoders)
    return LearnerProcess(
        engine, sessions, vectors, learner, follower, fold, settings.memory_poll_seconds
    )
