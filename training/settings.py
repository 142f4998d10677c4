"""Training's settings: every default of `python -m training.train` in one commented block, and what follows from it.

    from training.settings import TrainSettings
    s = TrainSettings(data="data/processed/books", out="models/books", time_budget=25 * 60)

The command line (`training.train.build_parser`) takes its defaults from `TrainSettings`; the model dir's
`settings.json` is this dataclass as run, plus what was resolved while running (docs/CONTRACTS.md).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

DEFAULT_BACKBONE = "all-MiniLM-L6-v2"


class TrainError(RuntimeError):
    """A problem with the user's input (backbone, data, model dir): printed as one line, exit code 2."""


@dataclass
class TrainSettings:
    data: str = ""                       # processed data dir (training.prepare output)
    out: str = ""                        # model dir to write
    backbone: str = DEFAULT_BACKBONE     # offline MiniLM, a local HF folder, or a cached hub name
    max_length: int = 256                # tokens per window; truncation keeps the end token
    max_windows: int = 8                 # windows read per document when evaluating and serving (1: first window only)
    window_stride: int | None = None     # tokens shared by consecutive windows (None: deployment.encoding.default_stride)
    window_pooling: str = "auto"         # windows' logits -> document: mean, max, or auto (the better on valid)
    train_windows: str = "random"        # window a training step reads from a long document: random (a new one each epoch) or first
    train_layers: str = "auto"           # all (full fine-tune), N (top N layers from a cache of the frozen rest), auto (see layerplan)
    batch_size: int = 16
    epochs: float = 10.0                 # planned epochs (fractions allowed); a time budget may shorten it
    lr: float = 2e-4                     # peak learning rate of the top transformer layer
    head_lr: float = 5e-3                # peak learning rate of the new classifier head (pooler + classifier)
    lr_decay: float = 0.8                # each lower layer group gets lr_decay x the rate of the one above
    weight_decay: float = 0.01
    pct_start: float = 0.1               # share of steps spent warming up
    freeze_epochs: float = 0.0           # epochs training the head only before unfreezing
    pos_weight: float = 0.0              # >0: BCE pos_weight = min(this, sqrt(neg/pos)) per label
    seed: int = 42
    max_train_rows: int | None = None    # subsample train for quick runs
    time_budget: float | None = None     # seconds for the whole command (training shrinks to fit)
    blend: bool = True                   # blend with TF-IDF + logistic regression (training.blend chooses how, on valid)
    min_support: int = 5                 # per-label thresholds need this many positives in valid
    threads: int | None = None           # torch intra-op threads (default: torch's choice)
    eval_batch_size: int = 64
    resume: bool = False                 # start from <out>/checkpoint instead of the backbone
    pooling: str = "auto"                # sentence vector: auto (the backbone's own: mean for sentence-transformers), mean, cls
    device: str = "auto"                 # auto (CUDA, else MPS, else CPU), cpu, cuda, mps
    precision: str = "auto"              # auto (CUDA: bf16, else fp16; CPU: bf16 when native), fp32, bf16, fp16
    quiet: bool = False                  # no fastai progress bars and epoch table (the summary lines stay)
    curve_points: int = 8                # valid micro-F1 measured this many times while training (0: off)
    curve_rows: int = 128                # valid rows (first window) those measurements read


def check(s: TrainSettings) -> None:
    """TrainError for settings no run can use (the command line's types refuse them first; this guards callers
    that build TrainSettings themselves). The window stride's bound needs the tokenizer: `backbone.load_run`."""
    if s.max_length < 8 or s.batch_size < 1 or s.epochs <= 0 or s.lr <= 0 or s.head_lr <= 0 or not 0 < s.lr_decay <= 1:
        raise TrainError("--max-length ≥ 8, --batch-size ≥ 1, --epochs > 0, --lr and --head-lr > 0 and "
                         "0 < --lr-decay ≤ 1 are required")
    if s.max_windows < 1 or (s.window_stride is not None and s.window_stride < 0):
        raise TrainError("--max-windows ≥ 1 and --window-stride ≥ 0 are required")


def reading_windows(s: TrainSettings, pooling: str = "mean"):
    """How a document is read (`deployment.encoding.Windows`): --max-windows windows of --max-length tokens
    sharing --window-stride tokens (default: `default_stride`), pooled by `pooling`."""
    from deployment.encoding import Windows, default_stride

    stride = s.window_stride if s.window_stride is not None else default_stride(s.max_length)
    return Windows(max_windows=s.max_windows, stride=stride if s.max_windows > 1 else 0, pooling=pooling)


def per_process(s: TrainSettings, n_train: int, rt) -> TrainSettings:
    """`s` as one process of the run (`devices.Runtime`) sees it: its share of the global --batch-size (TrainError
    if the data cannot feed every process)."""
    from training import devices

    try:
        return replace(s, batch_size=devices.per_process_batch(s.batch_size, n_train, rt.world.size))
    except devices.DeviceError as e:
        raise TrainError(str(e)) from e
