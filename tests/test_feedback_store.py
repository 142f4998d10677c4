"""The corrections store on a real SQLite file and a real PostgreSQL server (started by the test session), through
its commands (`python -m feedback ...`, run in-process through `main`) and its write path (`feedback.store`).

The same tests run on both backends: schema from the migrations equals the models, tokens are stored hashed and
revoked at once, the rate limit and client_ref retries hold, export keeps the latest correction per text and
reports conflicts, training.prepare reads the export, import is all or nothing, an out-of-date schema is refused.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from tests.feedback_helpers import count, fresh_db, migrated, newer_migrations, rows

import feedback.schema as schema
from feedback.__main__ import main
from feedback.checks import Rate
from feedback.db import make_engine, writing
from feedback.store import NewCorrection, Refused, record
from feedback.tokens import hash_token, verify

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["Fantasy", "Romance", "Mystery"]


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path) -> str:
    return fresh_db(request.param, tmp_path, request)


def cli(*args: str) -> int:
    return main(list(args))


def correction(text: str, labels: list[str], client: str = "token:alice", **kw) -> NewCorrection:
    return NewCorrection(text=text, labels=labels, face="api", client_key=client, model_version="v1",
                         shown=kw.pop("shown", ["Fantasy"]), **kw)


def test_upgrade_creates_the_models_schema_once(db, capsys):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from feedback.models import Base

    assert cli("db", "upgrade", "--db", db) == 0
    assert f"schema empty -> {schema.head_revision()}" in capsys.readouterr().out
    assert cli("db", "upgrade", "--db", db) == 0
    assert "already the newest" in capsys.readouterr().out
    assert cli("db", "current", "--db", db) == 0
    engine = make_engine(db)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
            if conn.dialect.name == "sqlite":
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    finally:
        engine.dispose()
    assert diff == []   # the migrations build exactly what the models describe


def test_tokens_are_stored_hashed_and_revoked_at_once(db, capsys):
    assert cli("tokens", "add", "alice", "--db", db) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("mltc_") and len(token) > 40
    assert cli("tokens", "add", "alice", "--db", db) == 2                 # one active token per name
    assert "is active" in capsys.readouterr().err
    assert cli("tokens", "add", "ops", "--operator", "--db", db) == 0
    capsys.readouterr()
    assert cli("tokens", "list", "--db", db) == 0
    listing = capsys.readouterr().out
    assert "alice" in listing and "operator" in listing and token not in listing
    engine = make_engine(db)
    try:
        with engine.connect() as conn:
            stored = [tuple(r) for r in conn.execute(text("SELECT name, token_hash FROM api_tokens"))]
        assert ("alice", hash_token(token)) in stored and token not in str(stored)   # only the hash
        assert verify(engine, token).name == "alice" and not verify(engine, token).operator
        assert verify(engine, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
        assert cli("tokens", "revoke", "alice", "--db", db) == 0
        assert verify(engine, token) is None                              # no cache: refused at once
        assert cli("tokens", "revoke", "alice", "--db", db) == 2          # nothing active to revoke
        assert cli("tokens", "add", "alice", "--db", db) == 0             # the name can be given again
        assert cli("tokens", "add", "bad name!", "--db", db) == 2
    finally:
        engine.dispose()


def test_client_ref_retries_and_the_rate_limit(db):
    migrated(db)
    engine = make_engine(db)
    try:
        first, created = record(engine, correction("A dragon.", ["Fantasy"], client_ref="r-1"))
        again, created_again = record(engine, correction("A dragon.", ["Fantasy"], client_ref="r-1"))
        assert created and not created_again and again == first            # a retry returns the stored id
        with pytest.raises(Refused) as err:
            record(engine, correction("A dragon.", ["Romance"], client_ref="r-1"))
        assert err.value.status == 409
        rate = Rate(3, 60)
        for i in range(2):
            record(engine, correction(f"text {i}", ["Mystery"]), rate=rate)
        with pytest.raises(Refused) as err:
            record(engine, correction("one too many", ["Mystery"]), rate=rate)
        assert err.value.status == 429 and err.value.retry_after >= 1
        record(engine, correction("another client", ["Mystery"], client="token:bob"), rate=rate)   # per client
    finally:
        engine.dispose()
    assert count(db) == 4
    # Fantasy was shown each time: confirmed once (1 row), then removed with Mystery added three times (6 rows)
    assert count(db, "correction_labels") == 7


def test_export_keeps_the_latest_per_text_reports_conflicts_and_prepare_reads_it(db, tmp_path, capsys):
    migrated(db)
    engine = make_engine(db)
    tricky = 'Quotes "here", a comma, a tab\tand\nnew lines\r\n, U+2028 \u2028 and <b>markup</b>.'
    try:
        record(engine, correction("The wizard's quest.", ["Fantasy"], client="token:alice"))
        record(engine, correction("The  wizard's quest. ", ["Fantasy", "Mystery"], client="token:bob"))  # same text
        record(engine, correction(tricky, ["Romance"], client="token:alice"))
        record(engine, correction(tricky, ["Mystery", "Romance"], client="token:alice"))   # one client: no conflict
        for i in range(6):
            record(engine, correction(f"Murder in the village number {i}.", ["Mystery"], client="token:carol"))
        for i in range(6):
            record(engine, correction(f"A summer of love letters {i}.", ["Romance"], client="token:carol",
                                      suggested=["Epistolary <script>"]))
    finally:
        engine.dispose()
    out = tmp_path / "export" / "corrections.jsonl"
    assert cli("export", "--out", str(out), "--db", db, "--quiet") == 0
    assert "exported 14 texts from 16 corrections" in capsys.readouterr().out
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").split("\n") if line]
    by_text = {x["text"]: x for x in lines}
    assert by_text["The  wizard's quest. "]["labels"] == ["Fantasy", "Mystery"]   # the latest won
    assert "The wizard's quest." not in by_text
    assert by_text[tricky]["labels"] == ["Mystery", "Romance"] and by_text[tricky]["corrections"] == 2
    manifest = json.loads((tmp_path / "export" / "corrections.manifest.json").read_text())
    assert manifest["rows"] == 14 and manifest["corrections"] == 16 and manifest["superseded"] == 2
    assert manifest["conflicts"]["texts"] == 1
    assert manifest["conflicts"]["examples"][0]["label_sets"] == [["Fantasy"], ["Fantasy", "Mystery"]]
    assert manifest["model_versions"] == {"v1": 16}
    assert manifest["time_range"]["first"] <= manifest["time_range"]["last"]
    import hashlib
    assert manifest["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()

    processed = tmp_path / "processed"
    proc = subprocess.run([sys.executable, "-m", "training.prepare", "--input", str(out), "--out", str(processed),
                           "--min-label-freq", "1", "--quiet"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import pandas as pd

    dataset = pd.read_csv(processed / "dataset.csv", dtype=str, keep_default_na=False)
    assert len(dataset) == 14
    got = {json.dumps(json.loads(x)) for x in dataset["labels"]}
    assert got == {json.dumps(x["labels"]) for x in lines}   # every label set arrives intact


def test_import_is_all_or_nothing_and_a_second_import_stores_nothing(db, tmp_path, capsys, tiny_bundle):
    migrated(db)
    good = tmp_path / "good.csv"
    good.write_text('text,labels\n"A dragon, a sword.","[""Fantasy""]"\n"Two, lines\nof love","[""Romance"", ""Mystery""]"\n',
                    encoding="utf-8")
    bad = tmp_path / "bad.csv"
    bad.write_text('text,labels\n"fine","[""Fantasy""]"\n"  ","[""Fantasy""]"\n"x","Fantasy"\n"y","[""Nope""]"\n',
                   encoding="utf-8")
    assert cli("import", str(bad), "--db", db) == 2               # without a model any label name is taken
    err = capsys.readouterr().err
    assert "2 of 4 rows cannot be imported, so none was" in err and "line 3: the text is empty" in err
    assert "line 4: \"labels\" must be a list" in err
    assert cli("import", str(bad), "--db", db, "--bundle", str(tiny_bundle)) == 2
    assert "line 5: \"labels\" holds 1 label(s) the model does not have: 'Nope'" in capsys.readouterr().err
    assert count(db) == 0
    assert cli("import", str(good), "--db", db, "--bundle", str(tiny_bundle)) == 0
    assert "imported 2 of 2 rows" in capsys.readouterr().out
    assert cli("import", str(good), "--db", db) == 0
    assert "imported 0 of 2 rows from" in capsys.readouterr().out and count(db) == 2
    stored = rows(db)
    assert [r["labels"] for r in stored] == [["Fantasy"], ["Romance", "Mystery"]]
    assert stored[1]["text"] == "Two, lines\nof love" and {r["face"] for r in stored} == {"import"}
    from deployment.version import bundle_version
    version = bundle_version(tiny_bundle)
    assert {r["model_version"] for r in stored} == {version} and [r["shown"] for r in stored] == [None, None]
    capsys.readouterr()
    assert cli("stats", "--db", db) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["total"] == 2 and stats["model_versions"][version] == {"corrections": 2, "with_shown": 0, "labels": {}}


def test_an_older_schema_is_refused_with_the_command_that_upgrades_it(db, tmp_path, monkeypatch, capsys):
    migrated(db)
    head = schema.head_revision()
    newer = newer_migrations(tmp_path)
    monkeypatch.setattr(schema, "MIGRATIONS", newer)
    engine = make_engine(db)
    try:
        with pytest.raises(schema.SchemaError, match=r"run `python -m feedback db upgrade --db "):
            schema.ensure_current(engine)
        assert cli("tokens", "list", "--db", db) == 2
        assert "python -m feedback db upgrade" in capsys.readouterr().err
        assert cli("db", "upgrade", "--db", db) == 0
        assert f"{head} -> 0002_test" in capsys.readouterr().out
        assert schema.ensure_current(engine) == "0002_test"
    finally:
        engine.dispose()


def test_the_command_runs_as_a_module(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    proc = subprocess.run([sys.executable, "-m", "feedback", "tokens", "add", "ci", "--db", url],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("mltc_") and "shown once" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "feedback", "db", "current", "--db", "postgresql://nobody@127.0.0.1:1/x"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1 and "cannot use the database" in proc.stderr and "Traceback" not in proc.stderr


def test_write_transactions_serialise_concurrent_writers(db):
    """Eight threads x 25 records through the write path: every one stored once, ids distinct."""
    from concurrent.futures import ThreadPoolExecutor

    migrated(db)
    engine = make_engine(db)
    try:
        def client(c: int) -> list[int]:
            return [record(engine, correction(f"client {c} text {i}", ["Mystery"], client=f"token:c{c}"),
                           rate=Rate(1000, 60))[0] for i in range(25)]

        with ThreadPoolExecutor(8) as pool:
            ids = [i for chunk in pool.map(client, range(8)) for i in chunk]
        with writing(engine) as conn:
            assert conn.execute(text("SELECT count(*) FROM corrections")).scalar() == 200
    finally:
        engine.dispose()
    assert len(set(ids)) == 200
