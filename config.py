"""Root-anchored paths shared by every stage, and the one switch that keeps model libraries offline.

Every command builds its default paths from here, so `python -m training.prepare` behaves the same from
any working directory. Importing this module changes nothing in the process: a module that loads models
calls `use_offline_hub()` itself, before it imports transformers. Each stage keeps its own settings dataclass.
"""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent          # the repository root
DATA_DIR = ROOT / "data"
SAMPLE_DIR = DATA_DIR / "sample"                # small embedded data written for the project (in git)
RAW_DIR = DATA_DIR / "raw"                      # scraper output, never edited by hand (git-ignored)
PROCESSED_DIR = DATA_DIR / "processed"          # training.prepare output (git-ignored)
MODELS_DIR = ROOT / "models"                    # training / compression output (git-ignored)
SHARED_DIR = Path(os.environ.get("MLTC_SHARED_DIR", ROOT.parent / "shared"))  # read-only real data, may be absent

# No model hub is reachable on the machines we target: libraries must fail fast instead of hanging. A user who
# has the hub overrides these by setting the variables to 0 before running a command.
OFFLINE_ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def use_offline_hub() -> None:
    """Default the Hugging Face libraries to offline mode. huggingface_hub reads these once, when it is first
    imported, so call this before importing transformers, datasets or huggingface_hub."""
    for key, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
