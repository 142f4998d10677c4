"""What a server answers with when no registry is involved, and the pair every server hands a request.

    from deployment.registry.served import FixedModel
    models = FixedModel(site_or_predictor)       # --bundle B: one model for the life of the process
    served = models.current()                    # Served(version, model), as LiveModel.current() gives it

Kept apart from live.py so that a site serving one bundle imports no database library.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Served:
    """A loaded model and its version."""

    version: str | None
    model: Any


class FixedModel:
    """One bundle, for the life of the process (`--bundle B`)."""

    def __init__(self, model: Any):
        self._served = Served(getattr(model, "version", None), model)

    def current(self) -> Served:
        return self._served

    def status(self) -> dict:
        return {"mode": "bundle", "version": self._served.version}
