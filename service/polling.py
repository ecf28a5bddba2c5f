"""A background thread that calls one function every few seconds (registry and catalog
followers). A failure is logged when it starts and when it clears, not on every poll: a
database that is down for an hour writes two lines, not two thousand."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Poller:
    def __init__(self, name: str, poll: Callable[[], object], seconds: float) -> None:
        self.name, self._poll, self.seconds = name, poll, seconds
        self.failing = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.seconds):
            try:
                self._poll()
            except Exception:
                if not self.failing:
                    log.exception("%s failed; retrying every %.0f s", self.name, self.seconds)
                self.failing = True
                continue
            if self.failing:
                log.info("%s works again", self.name)
            self.failing = False
