"""The corrections store: what the people who use the model say its labels should have been.

    python -m feedback db upgrade                      # create / migrate the database (SQLite file or PostgreSQL URL)
    python -m feedback tokens add alice                # a bearer token for POST /api/feedback (printed once)
    python -m feedback export --out corrections.jsonl  # training.prepare's input format + a manifest

Modules: `db` (URL, engine, transactions), `models` (tables), `schema` (Alembic migrations in `migrations/`),
`checks` (the rules, pure), `store` (writing), `tokens`, `service` (what the faces call), `stats`, `exchange`
(import / export), `pgserver` (a throwaway local PostgreSQL for tests and benchmarks).
"""
