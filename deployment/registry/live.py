"""The model a server answers with: one fixed bundle, or whatever the registry says is current, swapped live.

    models = LiveModel(engine, load=lambda path: Predictor.from_bundle(path))   # registry mode
    models = FixedModel(predictor)          # --bundle B (deployment/registry/served.py: no database imported)
    served = models.current()        # take it once per request and keep it to the end of the request

How a swap happens without a restart and without a failed request, in each process (every gunicorn worker):
a daemon thread polls the registry's pointer (one primary-key read, every `poll_s` on average, 1 s by default). When the
pointer names another version, the thread loads it (`load(path)`, after checking the copy's content hash) while
the old model keeps answering, and holds it ready. The pointer says when to switch (`switch_at`, a few seconds
after the promote): the first `current()` at or after that moment (or the poll thread, whichever comes first)
replaces one reference, atomically. A request that started before keeps the object it took; the old model is
dropped when the last of them ends, and its memory with it (nothing else holds it). If the new model is not
loaded yet at `switch_at`, `current()` waits for it (up to `wait_s`) rather than answer with the old one: every
worker switches at the same moment, so a client never sees the versions go back and forth. A model that fails
to load is logged and reported by `status()`; the old one keeps answering.
"""
from __future__ import annotations

import logging
import os
import random
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from sqlalchemy.engine import Engine

from deployment.registry.records import copy_problem
from deployment.registry.served import Served
from deployment.registry.state import Pointer, read_pointer, version_row
from feedback.db import reading
from feedback.models import utcnow

log = logging.getLogger("deployment.registry")
DEFAULT_POLL_S = 1.0
DEFAULT_WAIT_S = 60.0


class NoModel(RuntimeError):
    """The registry has no current model (nothing promoted yet), or its copy cannot be loaded."""


@dataclass
class _Pending:
    """A version that will answer from `switch_at` on, loaded in the background."""

    version: str
    switch_at: datetime
    ready: threading.Event = field(default_factory=threading.Event)
    served: Served | None = None
    error: str | None = None


@dataclass(frozen=True)
class _State:
    serving: Served
    pending: _Pending | None = None
    event_id: int | None = None


class LiveModel:
    """The registry's current model, polled and swapped live (see the module doc)."""

    def __init__(self, engine: Engine, load: Callable[[Path], Any], poll_s: float = DEFAULT_POLL_S,
                 wait_s: float = DEFAULT_WAIT_S, clock: Callable[[], datetime] = utcnow):
        self.engine, self.load, self.poll_s, self.wait_s, self.clock = engine, load, poll_s, wait_s, clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self.last_error: str | None = None
        pointer = self._read()
        if pointer is None:
            raise NoModel("the registry has no current model yet: promote one with "
                          "`python -m deployment.registry promote BUNDLE` (or serve a bundle with --bundle)")
        now = self.clock()
        serving = pointer.serving(now)
        self._state = _State(self._load(serving), None, pointer.event_id)
        if serving != pointer.version:   # started inside a switch window: serve the old one until switch_at
            self._state = _State(self._state.serving, _Pending(pointer.version, pointer.switch_at), pointer.event_id)
            threading.Thread(target=self._prepare, args=(self._state.pending,), daemon=True).start()
        self.start()

    # ---- what a request calls --------------------------------------------------------------------------
    def current(self) -> Served:
        """The model that answers a request starting now."""
        if self._pid != os.getpid() or self._thread is None or not self._thread.is_alive():
            self.start()   # a forked worker (gunicorn --preload) has no poll thread of its own yet
        state = self._state
        pending = state.pending
        if pending is None or self.clock() < pending.switch_at:
            return state.serving
        if not pending.ready.wait(self.wait_s):
            log.error("model %s was not loaded %.0f s after its switch time; still answering with %s",
                      pending.version[:12], self.wait_s, state.serving.version[:12])
            return state.serving
        return self._commit(state).serving

    def status(self) -> dict:
        state = self._state
        out = {"mode": "registry", "version": state.serving.version, "poll_s": self.poll_s,
               "pending": None, "error": self.last_error}
        if state.pending is not None:
            out["pending"] = {"version": state.pending.version, "switch_at": state.pending.switch_at.isoformat() + "Z",
                              "loaded": state.pending.served is not None, "error": state.pending.error}
        return out

    # ---- the poll thread ---------------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
                return
            if self._pid != os.getpid():   # forked: the parent's pooled connections are not ours to use
                self.engine.dispose(close=False)
            self._pid = os.getpid()
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="registry-poll", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        # Jitter: the workers of one server start together and would otherwise all query the database at once.
        while not self._stop.wait(self.poll_s * random.uniform(0.5, 1.5)):
            try:
                self.poll()
            except Exception as err:   # a database hiccup must not kill the thread: try again next tick
                self.last_error = f"{type(err).__name__}: {str(err)[:300]}"
                log.warning("registry poll failed: %s", self.last_error)

    def poll(self) -> None:
        """One tick: commit a due switch; on a new pointer, load the version it names (in this thread)."""
        state = self._state
        if state.pending is not None and state.pending.ready.is_set() and self.clock() >= state.pending.switch_at:
            state = self._commit(state)
        pointer = self._read()
        if pointer is None or pointer.event_id == state.event_id:
            return
        with self._lock:
            state = self._state
            if pointer.version == state.serving.version:     # e.g. a rollback before the switch happened
                self._state = _State(state.serving, None, pointer.event_id)
                return
            pending = _Pending(pointer.version, pointer.switch_at)
            self._state = _State(state.serving, pending, pointer.event_id)
        self._prepare(pending)
        self.last_error = pending.error

    # ---- helpers -------------------------------------------------------------------------------------------
    def _read(self) -> Pointer | None:
        with reading(self.engine) as conn:
            return read_pointer(conn)

    def _load(self, version: str) -> Served:
        with reading(self.engine) as conn:
            row = version_row(conn, version)
        if row is None:
            raise NoModel(f"the registry's pointer names {version[:12]}, which is not registered")
        problem = copy_problem(Path(row.path), version)
        if problem:
            raise NoModel(problem)
        return Served(version, self.load(Path(row.path)))

    def _prepare(self, pending: _Pending) -> None:
        try:
            pending.served = self._load(pending.version)
            log.info("model %s loaded; it answers from %s UTC", pending.version[:12], pending.switch_at.isoformat())
        except Exception as err:   # a broken copy must not take the server down: the old model keeps answering
            pending.error = f"{type(err).__name__}: {str(err)[:500]}"
            log.error("cannot load model %s: %s; still answering with the old one", pending.version[:12], pending.error)
        finally:
            pending.ready.set()

    def _commit(self, seen: _State) -> _State:
        """Make the pending model the serving one (once; later callers see the result)."""
        with self._lock:
            state = self._state
            if state is seen and state.pending is not None and state.pending.ready.is_set():
                if state.pending.served is not None:
                    log.info("now answering with model %s (was %s)", state.pending.version[:12],
                             state.serving.version[:12])
                    self._state = _State(state.pending.served, None, state.event_id)
                else:
                    self._state = _State(state.serving, None, state.event_id)
            return self._state
