"""Hot swaps of the head in a running process.

`ModelWatcher` polls the registry's active pointer. When it moves, it loads the new head (the
artifact is verified against its checksums), checks that its projections match the index, warms
it on a real query, and swaps the searcher's one `active` reference: requests in flight finish
on the head they started with, new ones get the new head, none fails. A head that fails any
check is refused and the current one keeps serving.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from sqlalchemy.orm import Session, sessionmaker

from model.candidates import candidates
from model.checkpoint import load_head
from model.head import Query
from model.position_bias import bias_of
from service.errors import NotFound
from service.polling import Poller
from service.search.searcher import ActiveHead, Searcher
from service.threads import one_torch_thread
from storage.db import transaction
from storage.errors import ArtifactError, FusionrankError
from storage.registry import active_version, get_version, set_active

log = logging.getLogger(__name__)


class IncompatibleHead(FusionrankError):
    status_code = 409
    code = "incompatible_head"


def load_active_head(heads_dir: Path, version: str, like: ActiveHead) -> ActiveHead:
    """Load and verify `version`; refuse it unless its projections are those of `like` (the
    FAISS spaces in service were built with them). Runs on the watcher or a worker thread."""
    one_torch_thread()
    head, card = load_head(heads_dir / version)
    if head.projection_digest() != like.head.projection_digest():
        raise IncompatibleHead(
            f"head {version} was trained for another index build (its projections differ); "
            "activate a version trained since the last ingest"
        )
    return ActiveHead(head, version, bias_of(card))


def warm(active: ActiveHead, searcher: Searcher) -> None:
    """Score one real query so the first shopper request does not pay for lazy set-up."""
    idx = searcher.index
    idx.warm_filters()
    rows = torch.arange(min(8, idx.n_rows)).numpy()
    if not len(rows):
        return
    with torch.inference_mode():
        text = torch.from_numpy(idx.vectors("text", rows[:1])[0])
        q: Query = active.head.query(text, None)
        cands = candidates(idx, rows, active.head, with_image=False)
        active.head.score(q, cands)


class ModelWatcher:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        searcher: Searcher,
        heads_dir: Path,
        poll_seconds: float,
    ) -> None:
        self.sessions, self.searcher, self.heads_dir = sessions, searcher, heads_dir
        self.poll_seconds = poll_seconds
        self.refused: dict[str, str] = {}  # version -> why (not retried until the pointer moves)
        self.swaps = 0  # heads swapped in since start (service.telemetry)
        self._last_seen: str | None = None
        self._poller = Poller("model-watcher", self.check_once, poll_seconds)

    def start(self) -> None:
        self._poller.start()

    def stop(self) -> None:
        self._poller.stop()

    def check_once(self) -> str | None:
        """Swap to the registry's active version if it changed; returns the version swapped to."""
        with self.sessions() as s:
            version = active_version(session=s)
        if version != self._last_seen:  # the pointer moved: earlier refusals may be stale
            self.refused.clear()
            self._last_seen = version
        current = self.searcher.active
        if version is None or version == current.version or version in self.refused:
            return None
        try:
            new = load_active_head(self.heads_dir, version, current)
            warm(new, self.searcher)
        except FusionrankError as e:
            self.refused[version] = e.message
            log.error("refusing head %s, still serving %s: %s", version, current.version, e.message)
            return None
        self.searcher.active = new  # one reference: in-flight searches keep the head they read
        self.swaps += 1
        log.info("now serving head %s (was %s)", version, current.version)
        return version


def missing(version: str) -> str:
    return (
        f"version {version} cannot be served: its files are missing (head retention deletes "
        "those of old versions, FUSIONRANK_LEARNER_KEEP_HEADS); its record stays in GET /v1/models"
    )


def activate_version(*, watcher: ModelWatcher, version: str) -> str | None:
    """Serve `version` everywhere (a rollback or roll-forward): verify that its head loads and
    fits this index, point the registry at it, and swap it into this process at once (the other
    replicas follow within a poll). Returns the version it replaced. Raises NotFound for a
    version never registered, IncompatibleHead for one whose files are gone or that belongs to
    another index build; the registry then still names the previous version."""
    sessions, heads = watcher.sessions, watcher.heads_dir
    with sessions() as s:
        if get_version(session=s, version=version) is None:
            raise NotFound(f"no model version {version}; see GET /v1/models")
    if not (heads / version).exists():
        raise IncompatibleHead(missing(version))
    try:  # verify before pointing anyone at it
        load_active_head(heads, version, watcher.searcher.active)
    except ArtifactError as e:
        raise IncompatibleHead(f"version {version} cannot be served: {e.message}") from e
    with transaction(sessions) as s:
        previous = active_version(session=s)
        set_active(session=s, version=version)
    if not (heads / version).exists() and previous:  # pruned by a refresh meanwhile
        with transaction(sessions) as s:
            set_active(session=s, version=previous)
        raise IncompatibleHead(missing(version))
    watcher.refused.pop(version, None)
    watcher.check_once()  # this process at once; the other replicas within a poll
    return previous
