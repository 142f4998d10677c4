"""Root-anchored paths and environment defaults shared by every stage.

Every command builds its default paths from here, so `python -m training.prepare` behaves the same from
any working directory. Nothing else lives here: each stage keeps its own settings dataclass.
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

# No model hub is reachable on the machines we target: make every library fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
