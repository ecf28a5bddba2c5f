"""The composition root of `fusionrank serve`: everything a serving process holds, built once in
the lifespan and handed to the routes."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from learner.worker import Learner, WorkerConfig
from model.query_memory import QueryMemory
from service.catalog.index import CatalogIndex
from service.catalog.vectors import VectorBackend, VectorConfig, open_backend
from service.catalog.writer import CatalogWriter
from service.config import Settings
from service.encoding.embedder import Embedder, make_embedder
from service.errors import FusionrankError
from service.learning import encoders_of, learner_config, load_catalog, memory_config, memory_fold
from service.polling import Poller
from service.search.dispatch import SearchDispatcher
from service.search.hot_swap import ModelWatcher, load_active_head, warm
from service.search.impressions import ImpressionLogger
from service.search.memory import MemoryFollower
from service.search.memory_fold import MemoryFold
from service.search.online_metrics import OnlineMetrics
from service.search.searcher import ActiveHead, Searcher
from service.threads import ThreadPolicy
from storage.db import make_engine, migrate, session_factory

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    vectors: VectorBackend  # where the index's vector stores live
    owns_vectors: bool
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
    memory_follower: Poller | None = None  # reads what the query memory's folds wrote
    memory_fold: MemoryFold | None = None  # folds the logs into it, beside an in-process learner
    not_ready_reason: str = ""

    def close(self) -> None:
        for poller in (self.follower, self.memory_follower):
            if poller is not None:
                poller.stop()
        if self.memory_fold is not None:
            self.memory_fold.stop()
        if self.watcher is not None:
            self.watcher.stop()
        if self.learner is not None:
            self.learner.close()
        self.searches.shutdown()
        if self.searcher is not None:
            self.searcher.close()
        self.impressions.close()
        if self.owns_vectors:
            self.vectors.close()
        self.engine.dispose()


def start_runtime(
    settings: Settings,
    embedder: Embedder | None = None,
    *,
    vectors: VectorBackend | None = None,
    threads: ThreadPolicy | None = None,
    learning: WorkerConfig | None = None,
    background: bool = True,
) -> Runtime:
    """Everything a serving process needs. `vectors`: where the index's vector stores live,
    kept open (default: the configured backend, closed with the runtime); `threads`: the
    process's thread policy (default:
    serving's, from the settings); `learning`: how an in-process learner refreshes (default:
    from the settings); `background` starts the catalog follower, the registry watcher and, if
    configured, the in-process learner (tests that drive them by hand pass False)."""
    policy = threads or ThreadPolicy.serving(settings)
    policy.apply()
    migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    sessions = session_factory(engine)
    rt = Runtime(
        settings=settings,
        engine=engine,
        sessions=sessions,
        vectors=vectors or open_backend(VectorConfig.of(settings)),
        owns_vectors=vectors is None,
        embedder=embedder or make_embedder(settings),
        impressions=ImpressionLogger(sessions, flush_ms=settings.impression_flush_ms),
        metrics=OnlineMetrics(
            purchase_type=max(settings.event_grades, key=settings.event_grades.__getitem__),
            settle_seconds=settings.metrics_settle_seconds,
        ),
        searches=SearchDispatcher(policy.search_concurrency),
    )
    try:
        _serve_catalog(rt, policy)
        if rt.searcher is not None:
            # an in-process refresh runs on the share of the cores serving leaves it
            config = learning or replace(
                learner_config(settings), torch_threads=policy.refresh_threads
            )
            _start_learning(rt, config, background=background)
    except BaseException:
        rt.close()
        raise
    return rt


def _serve_catalog(rt: Runtime, policy: ThreadPolicy) -> None:
    """The searcher over the CURRENT index build, with the registry's active head."""
    settings = rt.settings
    loaded = load_catalog(settings, rt.sessions, rt.vectors)
    if isinstance(loaded, str):
        rt.not_ready_reason = loaded
        return
    index, boot = loaded.index, ActiveHead(loaded.head, loaded.version)
    mismatch = encoder_mismatch(index, rt.embedder)
    if mismatch:
        rt.not_ready_reason = mismatch
        return
    active = boot
    chosen = loaded.active
    if chosen != boot.version:
        try:
            active = load_active_head(settings.data_dir / "heads", chosen, boot)
        except FusionrankError as e:
            log.error("not serving the registry's head %s: %s; serving %s", chosen, e, boot.version)
    rt.searcher = Searcher(
        rt.embedder,
        index,
        active,
        per_channel=settings.candidates_per_channel,
        concurrency=policy.search_concurrency,
        encode_beside=policy.encode_beside,
        explore_rate=settings.explore_rate,
        explore_deep_rate=settings.explore_deep_rate,
        query_cache=settings.query_cache,
        memory=QueryMemory(memory_config(settings)),
    )
    warm(active, rt.searcher)  # e.g. a head's per-row attribute codes, before the first shopper
    rt.searcher.warm_encoders()
    embedder = rt.embedder
    rt.writer = CatalogWriter(
        sessions=rt.sessions,
        embedder=lambda: embedder,
        index=index,
        head=boot.head,
        images_dir=settings.images_dir,
    )
    applied = rt.writer.reconcile()
    rt.follower = Poller("catalog-follower", rt.writer.reconcile, settings.catalog_poll_seconds)
    assert rt.searcher.memory is not None
    encoders = (rt.embedder.text_encoder.id, rt.embedder.image_encoder.id)
    memory = MemoryFollower(rt.sessions, rt.searcher.memory, encoders)
    memory.poll()  # what shoppers did so far, before the first search
    rt.memory_follower = Poller("memory-follower", memory.poll, settings.memory_poll_seconds)
    log.info(
        "loaded %s (%d products, head %s, %d changes replayed)",
        index.meta.get("name", "index"),
        len(index),
        active.version,
        applied,
    )


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
    encoders = encoders_of(searcher.index)
    rt.learner = Learner(
        config,
        rt.sessions,
        searcher.index,
        encoders,
        fallback_version=searcher.index.meta["head_version"],
    )
    if settings.learner_in_process:
        rt.memory_fold = memory_fold(settings, rt.sessions, encoders)
    if background:
        assert rt.follower is not None and rt.memory_follower is not None
        rt.follower.start()
        rt.memory_follower.start()
        rt.watcher.start()
        if rt.memory_fold is not None:
            rt.memory_fold.start(settings.memory_poll_seconds)
        if settings.learner_in_process:
            rt.learner.start_scheduler()
            if settings.learner_refresh_on_drift:
                rt.metrics.on_drift = rt.learner.on_drift
