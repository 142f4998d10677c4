"""What the registry's commands do: register a bundle, compare two versions, promote, roll back.

    from deployment.registry.ops import Registry
    reg = Registry.open(db_url=None, store=None)            # the corrections database; models/registry for copies
    version = reg.register(Path("models/books-2/bundle"), by="alice")
    report = reg.compare("models/books-2/bundle", against="current")
    event = reg.promote("models/books-2/bundle", by="alice", force=False)
    event = reg.rollback(by="alice")

Every change is checked before the pointer moves: the candidate's copy must hash to its version and load with
the `Predictor` (a corrupt or incomplete bundle is refused with the reason, and the served model is untouched);
a promotion must not make the held-out scores worse than the current model's by more than the tolerance, unless
forced (and then the event says so). The comparison loads both models (onnxruntime, no torch) and scores them on
the rows neither trained on (deployment/registry/compare.py).
"""
from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from sqlalchemy.engine import Engine, Row

from deployment.registry import compare as cmp
from deployment.registry import records, state
from deployment.registry.state import RegistryError
from deployment.scoring import BundleError
from feedback.db import make_engine, reading, resolve_url
from feedback.schema import ensure_current

DEFAULT_SWITCH_S = 3.0        # servers poll every second; this leaves them time to load the new model first


class Worse(RegistryError):
    """promote refused: the candidate scores worse than the current model beyond the tolerance."""


def default_actor() -> str:
    try:
        return os.environ.get("MLTC_REGISTRY_USER") or getpass.getuser()
    except (KeyError, OSError):   # no user name for this uid (a container)
        return f"uid{os.getuid()}"


def load_predictor(path: Path):
    from deployment.predictor import Predictor   # onnxruntime: imported when a model is loaded

    return Predictor.from_bundle(path)


@dataclass
class Registry:
    engine: Engine
    store: Path
    progress: Callable[[str], None] = print

    @classmethod
    def open(cls, db_url: str | None = None, store: str | Path | None = None, progress=print) -> "Registry":
        """StoreError (a bad URL), SchemaError (an out-of-date schema), DBAPIError (unreachable) when it cannot."""
        engine = make_engine(resolve_url(db_url))
        try:
            ensure_current(engine)
        except Exception:
            engine.dispose()
            raise
        return cls(engine, records.resolve_store(store), progress)

    # ---- registering ---------------------------------------------------------------------------------------
    def register(self, bundle_dir: Path, by: str | None = None, data_dir: Path | None = None) -> Row:
        """Check, copy and record a bundle folder; returns its model_versions row (an existing one if it is known)."""
        bundle_dir = Path(bundle_dir).resolve()
        info = records.read_info(bundle_dir)
        version = records.bundle_version(bundle_dir)
        with reading(self.engine) as conn:
            row = state.version_row(conn, version)
        if row is not None and records.copy_problem(Path(row.path), version) is None:
            return row
        load_predictor(bundle_dir)   # BundleError: incomplete or corrupt, nothing is stored
        model_dir = records.model_dir_of(bundle_dir)
        if data_dir is not None and not (Path(data_dir) / "dataset.csv").is_file():
            raise RegistryError(f"--data {data_dir}: no dataset.csv there (a training.prepare output)")
        data_dir = Path(data_dir).resolve() if data_dir else records.data_dir_of(bundle_dir, info, model_dir)
        record = records.build_record(bundle_dir, info, data_dir, model_dir)
        copy = records.store_bundle(bundle_dir, version, self.store, data_dir, record)
        self.progress(f"registered {version[:12]} from {bundle_dir} (copy {copy.parent}"
                      + ("" if data_dir else "; no prepared data found: it cannot be compared") + ")")
        return state.add_version(self.engine, version=version, path=str(copy), source=str(bundle_dir),
                                 by=by or default_actor(), labels=list(info["labels"]), record=record)

    def resolve(self, name: str | Path, by: str | None = None) -> Row:
        """A bundle folder (registered on the way) or a registered version / prefix / `current` / `previous`."""
        if Path(name).is_dir():
            return self.register(Path(name), by)
        with reading(self.engine) as conn:
            if str(name) in ("current", "previous"):
                pointer = state.read_pointer(conn)
                version = pointer and (pointer.version if name == "current" else pointer.previous)
                if not version:
                    raise RegistryError(f"the registry has no {name} version")
                return state.version_row(conn, version)
            return state.resolve_version(conn, str(name))

    def check_servable(self, row: Row) -> None:
        """RegistryError with the reason when the registry's copy of `row` cannot be served."""
        problem = records.copy_problem(Path(row.path), row.version)
        if problem:
            raise RegistryError(f"refused: {problem}")
        try:
            load_predictor(Path(row.path))
        except BundleError as err:
            raise RegistryError(f"refused: {row.version[:12]} cannot be loaded: {err}") from None

    # ---- comparing -----------------------------------------------------------------------------------------
    def compare_rows(self, candidate: Row, incumbent: Row, rounds: int = cmp.DEFAULT_BOOTSTRAP,
                     seed: int = 0) -> dict:
        """Both models scored on the rows neither trained on (compare.py), with where those rows came from."""
        data = {}
        for who, row in (("candidate", candidate), ("incumbent", incumbent)):
            folder = records.data_of(Path(row.path))
            if folder is None:
                raise RegistryError(f"{row.version[:12]} ({who}) was registered without the prepared data it was "
                                    "trained on, so the rows it never saw are unknown: register its bundle again "
                                    "with --data DIR")
            data[who] = cmp.read_dataset(folder / "dataset.csv")
        rows, facts = cmp.evaluation_rows(data["candidate"], data["incumbent"])
        if not rows:
            raise RegistryError("no rows to compare on: neither model's data holds a test or feedback text that "
                                f"the other did not train on ({facts})")
        labels = cmp.union_labels(candidate.labels, incumbent.labels)
        texts = [r.text for r in rows]
        decisions = {}
        for who, row in (("candidate", candidate), ("incumbent", incumbent)):
            self.progress(f"scoring {row.version[:12]} ({who}) on {len(texts)} held-out rows")
            predictor = load_predictor(Path(row.path))
            decisions[who] = predicted(predictor, texts, labels)
            del predictor
        report = cmp.compare_decisions(rows, labels, decisions["candidate"], decisions["incumbent"], rounds, seed)
        only = {who: sorted(set(r.labels) - set(other.labels))
                for who, r, other in (("candidate", candidate, incumbent), ("incumbent", incumbent, candidate))}
        return {"candidate": candidate.version, "incumbent": incumbent.version, "rows": facts,
                "labels_only_in": only, **report}

    def compare(self, candidate: str | Path, against: str = "current", **kw) -> dict:
        cand = self.resolve(candidate)
        inc = self.resolve(against)
        if cand.version == inc.version:
            raise RegistryError(f"{cand.version[:12]} is {against}: nothing to compare")
        return self.compare_rows(cand, inc, **kw)

    # ---- promote / rollback --------------------------------------------------------------------------------
    def promote(self, candidate: str | Path, by: str | None = None, force: bool = False, reason: str | None = None,
                tolerance: float = cmp.DEFAULT_TOLERANCE, rounds: int = cmp.DEFAULT_BOOTSTRAP,
                switch_in_s: float = DEFAULT_SWITCH_S, initial: bool = False) -> tuple[Row | None, dict | None]:
        """Make `candidate` current. Returns (event, comparison); (None, None) when it is current already, or
        with `initial` when some model is current. Worse: refused as worse; RegistryError: refused otherwise."""
        by = by or default_actor()
        row = self.resolve(candidate, by)
        with reading(self.engine) as conn:
            pointer = state.read_pointer(conn)
        if pointer is not None and (initial or pointer.version == row.version):
            return None, None
        self.check_servable(row)
        comparison, ok, why = None, True, "the first model promoted"
        if pointer is not None:
            with reading(self.engine) as conn:
                incumbent = state.version_row(conn, pointer.version)
            try:
                comparison = self.compare_rows(row, incumbent, rounds=rounds)
                ok, why = cmp.verdict(comparison, tolerance)
            except RegistryError as err:
                ok, why = False, f"cannot compare with the current model: {err}"
            if not ok and not force:
                raise Worse(f"not promoted: {why} (--force promotes it anyway, and the history records that)")
        summary = None if comparison is None else {
            "rows": comparison["rows"], "slices": {k: {x: v[x] for x in ("rows", "candidate", "incumbent", "delta")}
                                                   for k, v in comparison["slices"].items()},
            "changed": {k: v for k, v in comparison["changed"].items() if k != "examples"}, "tolerance": tolerance}
        event = state.flip(self.engine, action="promote", version=row.version, expected=pointer and pointer.version,
                           actor=by, forced=not ok, reason=reason or why, comparison=summary, switch_in_s=switch_in_s)
        return event, comparison

    def rollback(self, by: str | None = None, reason: str | None = None,
                 switch_in_s: float = DEFAULT_SWITCH_S) -> Row:
        """Serve the version before the current one again (the history is a stack: each rollback goes one back)."""
        with reading(self.engine) as conn:
            current, target = state.rollback_target(conn)
            row = state.version_row(conn, target)
        self.check_servable(row)
        return state.flip(self.engine, action="rollback", version=target, expected=current, actor=by or default_actor(),
                          reason=reason or f"rolled back from {current[:12]}", switch_in_s=switch_in_s)


def predicted(predictor, texts: list[str], labels: list[str], batch: int = 64) -> np.ndarray:
    """bool [n, len(labels)]: the labels `predictor` predicts for each text (its own tuned thresholds)."""
    from tqdm import tqdm

    names = []
    for start in tqdm(range(0, len(texts), batch), desc="predict", unit="batch", leave=False, disable=None):
        names.extend(p["predicted"] for p in predictor.predict(texts[start:start + batch]))
    return cmp.decision_matrix(names, labels)
