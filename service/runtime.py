"""Everything a running service holds, built once in the lifespan and handed to the routes."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from learner.dataset import Encoders
from learner.refresh import RefreshConfig
from learner.train import TrainConfig
from learner.versions import register_bootstrap
from learner.worker import Learner, WorkerConfig
from model.checkpoint import load_head
from service.catalog.index import CatalogIndex
from service.catalog.writer import CatalogWriter
from service.config import Settings
from service.encoding.embedder import Embedder
from service.encoding.encoders import load_colour_encoder, load_image_encoder, load_text_encoder
from service.errors import FusionrankError
from service.polling import Poller
from service.search.dispatch import SearchDispatcher
from service.search.hot_swap import ModelWatcher, load_active_head, warm
from service.search.impressions import ImpressionLogger
from service.search.online_metrics import OnlineMetrics
from service.search.searcher import ActiveHead, Searcher
from storage.artifacts import current
from storage.db import make_engine, migrate, session_factory, transaction
from storage.registry import active_version, set_active

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    embedder: Embedder
    impressions: ImpressionLogger
    metrics: OnlineMetrics
    # Whole searches (decode, encoders, FAISS, scoring): a lone one on the event loop, several
    # on a pool of search_concurrency threads. That pool hands off faster than anyio's shared
    # one and queues the rest instead of parking dozens of threads on the encode slots.
    searches: SearchDispatcher
    searcher: Searcher | None = None
    writer: CatalogWriter | None = None
    follower: Poller | None = None  # applies catalog changes other processes commit
    watcher: ModelWatcher | None = None
    learner: Learner | None = None
    not_ready_reason: str = ""

    def close(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        if self.watcher is not None:
            self.watcher.stop()
        if self.learner is not None:
            self.learner.close()
        self.searches.shutdown()
        self.impressions.close()
        self.engine.dispose()


def search_concurrency(settings: Settings) -> int:
    return settings.search_concurrency or os.cpu_count() or 1


def make_embedder(settings: Settings, *, serving: bool = False) -> Embedder:
    """Ingest batches use every core. Serving starts at one thread; each search then claims its
    own (service.encoding.threads.EncodeThreads): every free core alone on the event loop, one
    beside other searches or elsewhere (one thread per query was 94 against 70 text searches/s at
    concurrency 4)."""
    threads = settings.torch_threads or (1 if serving else 0)
    if threads:
        torch.set_num_threads(threads)
    return Embedder(
        load_text_encoder(settings),
        load_image_encoder(settings),
        settings.cache_dir,
        colour_encoder=load_colour_encoder(settings),
        batch_size=settings.encode_batch_size,
        max_image_bytes=settings.max_image_bytes,
        max_image_pixels=settings.max_image_pixels,
    )


def learner_config(settings: Settings, train: TrainConfig | None = None) -> WorkerConfig:
    """The learner's configuration from the settings, the one place their defaults live.
    `train`: how to train instead (a benchmark's ablation); by default the settings' clip and
    the learner's own hyperparameters."""
    return WorkerConfig(
        interval_minutes=settings.learner_interval_minutes,
        min_new_events=settings.learner_min_new_events,
        poll_seconds=settings.learner_poll_seconds,
        lease_seconds=settings.lease_seconds,
        retention_days=settings.retention_days,
        torch_threads=settings.torch_threads,
        heads_dir=settings.data_dir / "heads",
        refresh=RefreshConfig(
            event_grades=settings.event_grades,
            settle=timedelta(seconds=settings.learner_settle_seconds),
            holdout_fraction=settings.learner_holdout_fraction,
            min_new_engaged=settings.learner_min_engaged,
            min_holdout_engaged=settings.learner_min_holdout_engaged,
            replay=settings.learner_replay,
            max_window=settings.learner_max_window,
            margin=settings.promotion_margin,
            min_shown_share=settings.learner_min_shown_share,
            per_channel=settings.candidates_per_channel,
            keep_heads=settings.learner_keep_heads,
            train=train or TrainConfig(ips_clip=settings.learner_ips_clip),
        ),
    )


def start_runtime(
    settings: Settings,
    embedder: Embedder | None = None,
    *,
    background: bool = True,
    train: TrainConfig | None = None,
) -> Runtime:
    """Everything a serving process needs. `background` starts the catalog follower, the
    registry watcher and, if configured, the in-process learner (tests that drive them by hand
    pass False). `train`: see learner_config."""
    migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    sessions = session_factory(engine)
    rt = Runtime(
        settings=settings,
        engine=engine,
        sessions=sessions,
        embedder=embedder or make_embedder(settings, serving=True),
        impressions=ImpressionLogger(sessions, flush_ms=settings.impression_flush_ms),
        metrics=OnlineMetrics(
            purchase_type=max(settings.event_grades, key=settings.event_grades.__getitem__),
            settle_seconds=settings.metrics_settle_seconds,
        ),
        searches=SearchDispatcher(search_concurrency(settings)),
    )
    try:
        _load_catalog(rt)
        if rt.searcher is not None:
            _start_learning(rt, learner_config(settings, train), background=background)
    except BaseException:
        rt.close()
        raise
    return rt


def _load_catalog(rt: Runtime) -> None:
    """Load the CURRENT index build and its head, then replay newer SQL catalog changes."""
    settings = rt.settings
    build = current(settings.index_dir)
    if build is None:
        rt.not_ready_reason = (
            f"no index in {settings.index_dir}; run `fusionrank ingest CATALOG.csv` first"
        )
        return
    index = CatalogIndex.load(
        build, ef_search=settings.hnsw_ef_search, exact_limit=settings.exact_filter_limit
    )
    mismatch = encoder_mismatch(index, rt.embedder)
    if mismatch:
        rt.not_ready_reason = mismatch
        return
    heads = settings.data_dir / "heads"
    version = index.meta["head_version"]
    head, _card = load_head(heads / version)
    active = ActiveHead(head, version)
    with transaction(rt.sessions) as s:  # databases from before the registry, or a copied build
        register_bootstrap(s, heads, version)
        chosen = active_version(s)
        if chosen is None:
            set_active(s, version)
    if chosen not in (None, version):
        try:
            active = load_active_head(heads, chosen, active)
        except FusionrankError as e:
            log.error("not serving the registry's head %s: %s; serving %s", chosen, e, version)
    rt.searcher = Searcher(
        rt.embedder,
        index,
        active,
        per_channel=settings.candidates_per_channel,
        concurrency=search_concurrency(settings),
        threads=settings.torch_threads,
        explore_rate=settings.explore_rate,
        query_cache=settings.query_cache,
    )
    warm(active, rt.searcher)  # e.g. a head's per-row attribute codes, before the first shopper
    rt.searcher.warm_encoders()
    rt.writer = CatalogWriter(
        sessions=rt.sessions,
        embedder=rt.embedder,
        index=index,
        head=active,
        images_dir=settings.images_dir,
    )
    applied = rt.writer.reconcile()
    rt.follower = Poller("catalog-follower", rt.writer.reconcile, settings.catalog_poll_seconds)
    version = active.version
    log.info(
        "loaded %s (%d products, head %s, %d changes replayed)",
        build.name,
        len(index),
        version,
        applied,
    )


def encoders_of(embedder: Embedder) -> Encoders:
    """Which logged query vectors the learner reads: those of the embedder's encoders."""
    te, ie, ce = embedder.text_encoder, embedder.image_encoder, embedder.colour_encoder
    return Encoders(te.id, te.dim, ie.id, ie.dim, ce.id if ce else None, ce.dim if ce else 0)


def encoder_mismatch(index: CatalogIndex, embedder: Embedder) -> str:
    """Why queries encoded by `embedder` cannot be searched in `index` ('' if they can): vectors
    of another model may even have the same width and would silently rank nonsense."""
    built: dict[str, str] = index.meta.get("encoders") or {}
    configured = {"text": embedder.text_encoder.id, "image": embedder.image_encoder.id}
    if embedder.colour_encoder is not None and index.dim("colour"):
        configured["colour"] = embedder.colour_encoder.id
    wrong = [
        f"{k} {built[k]!r} (configured: {v!r})"
        for k, v in configured.items()
        if k in built and built[k] != v
    ]
    if not wrong:
        return ""
    return (
        f"the index was built with other encoders: {', '.join(wrong)}; "
        "re-run `fusionrank ingest` or configure the encoders it was built with"
    )


def _start_learning(rt: Runtime, config: WorkerConfig, *, background: bool) -> None:
    settings, searcher = rt.settings, rt.searcher
    assert searcher is not None
    rt.watcher = ModelWatcher(
        rt.sessions, searcher, settings.data_dir / "heads", settings.model_poll_seconds
    )
    rt.learner = Learner(
        config,
        rt.sessions,
        searcher.index,
        encoders_of(rt.embedder),
        fallback_version=searcher.index.meta["head_version"],
        serving=searcher.cores if settings.learner_in_process else None,
    )
    if background:
        assert rt.follower is not None
        rt.follower.start()
        rt.watcher.start()
        if settings.learner_in_process:
            rt.learner.start_scheduler()
            if settings.learner_refresh_on_drift:
                rt.metrics.on_drift = rt.learner.on_drift
