"""The model registry: versioned bundles, a fair comparison, promote and roll back while the servers run.

    python -m deployment.registry promote models/books/bundle          # register + compare + make current
    python -m deployment.registry list
    python -m deployment.registry compare models/books-2/bundle --against current
    python -m deployment.registry rollback

Modules: `records` (the registry's copies of bundles and what is recorded about each), `state` (the tables: versions,
history, the pointer), `compare` (scores on rows neither model trained on, paired bootstrap), `ops` (what the
commands do), `live` (what a server answers with: the pointer polled, the new model loaded and swapped live).
The state lives in the corrections database (feedback.db: SQLite file by default, PostgreSQL by URL). Torch-free:
models are loaded with deployment.predictor, and nothing here imports training.
"""
