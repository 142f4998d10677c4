"""The trained model dir `models/<name>/` (docs/CONTRACTS.md): its one writer and its one reader.

    from training.modeldir import read_model_dir, load_saved
    md = read_model_dir("models/books")     # checked files, no torch: labels, thresholds, settings, metrics, ...
    saved = load_saved("models/books")      # ... plus the classifier, its tokenizer, its TF-IDF part and its data

`training.train` writes the folder with `write_model_dir` (built beside it and swapped in whole). Everything that
reads one goes through `read_model_dir`, which checks every file before any work starts (a missing or half-written
checkpoint fails with the file's name, not a stack trace from transformers): training's `--evaluate` and
`--resume`, `compression.quantize`, `bench.combine`. Problems raise `ModelDirError`, one line naming the file.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deployment.files import replace_dir
from deployment.formats import dumps

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
OWNER_FILE = "settings.json"     # what makes a folder a model dir that a new run may replace


class ModelDirError(ValueError):
    """A model dir (or the data it names) that cannot be used: the message names the file."""


# --------------------------------------------------------------------------------------------- reading
def _json(path: Path):
    if not path.is_file():
        raise ModelDirError(f"{path}: file is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelDirError(f"{path}: not valid JSON, the file may be half-written ({exc})") from exc


def read_settings(model_dir: str | Path) -> dict:
    """The settings.json of a model dir (ModelDirError when missing or not JSON)."""
    return _json(Path(model_dir) / "settings.json")


@dataclass
class ModelDir:
    """A trained model folder as read and checked by `read_model_dir`."""
    root: Path
    checkpoint: Path
    weights: Path
    config: dict                     # checkpoint/config.json
    labels: list[str]                # labels.json, in output order
    thresholds: list[float]          # thresholds.json's per-label thresholds aligned with `labels`
    thresholds_file: dict            # thresholds.json as stored (global, per_label, rare, ...)
    global_threshold: float
    settings: dict
    metrics: dict                    # {} when metrics.json is absent (a warning says so)
    command: str
    linear: Path | None = None       # the linear/ folder (linear.json + linear.npz), when there is one
    warnings: list[str] = field(default_factory=list)

    @property
    def max_length(self) -> int:
        return int(self.settings["max_length"])

    @property
    def uses_token_type_ids(self) -> bool:
        # BERT-family models (MiniLM included) take segment ids; RoBERTa's single-row type table means it doesn't.
        return int(self.config.get("type_vocab_size", 0) or 0) > 1


def read_model_dir(model_dir: str | Path) -> ModelDir:
    """Read and check every file of a model dir (ModelDirError naming the first bad one)."""
    from training.metrics import threshold_vector

    root = Path(model_dir)
    if not root.is_dir():
        raise ModelDirError(f"{root}: model directory does not exist (train one with `python -m training.train`)")
    ckpt = root / "checkpoint"
    if not ckpt.is_dir():
        raise ModelDirError(f"{ckpt}: checkpoint folder is missing")
    config = _json(ckpt / "config.json")
    weights = next((ckpt / n for n in WEIGHT_FILES if (ckpt / n).is_file()), None)
    if weights is None:
        raise ModelDirError(f"{ckpt / WEIGHT_FILES[0]}: model weights are missing (half-written checkpoint?)")
    if not (ckpt / "tokenizer.json").is_file() and not (ckpt / "tokenizer_config.json").is_file():
        raise ModelDirError(f"{ckpt / 'tokenizer.json'}: the checkpoint has no tokenizer")

    labels_path = root / "labels.json"
    raw = _json(labels_path)
    if not isinstance(raw, dict) or not raw:
        raise ModelDirError(f"{labels_path}: expected {{\"label\": index}}")
    labels = sorted(raw, key=raw.get)
    if sorted(raw.values()) != list(range(len(raw))):
        raise ModelDirError(f"{labels_path}: indices must be 0..{len(raw) - 1}, got {sorted(raw.values())}")
    n_model = len(config.get("id2label") or {}) or config.get("num_labels")
    if n_model is not None and int(n_model) != len(labels):
        raise ModelDirError(f"{labels_path}: {len(labels)} labels, but {ckpt / 'config.json'} has {n_model} outputs")
    id2label = config.get("id2label") or {}
    if id2label and [id2label.get(str(i), id2label.get(i)) for i in range(len(labels))] != labels \
            and not all(str(v).startswith("LABEL_") for v in id2label.values()):
        raise ModelDirError(f"{labels_path}: label order differs from id2label in {ckpt / 'config.json'}")

    th_path = root / "thresholds.json"
    th = _json(th_path)
    per_label = th.get("per_label") if isinstance(th, dict) else None
    if not isinstance(per_label, dict) or set(per_label) != set(labels):
        missing = sorted(set(labels) - set(per_label or {}))
        raise ModelDirError(f"{th_path}: 'per_label' must have one threshold per label (missing {missing[:5]})")
    try:
        thresholds = [float(t) for t in threshold_vector(th, labels)]
    except (TypeError, ValueError) as exc:
        raise ModelDirError(f"{th_path}: thresholds must be numbers ({exc})") from exc
    if not all(0.0 <= t <= 1.0 for t in thresholds):
        raise ModelDirError(f"{th_path}: thresholds must lie in [0, 1]")

    settings = read_settings(root)
    if not isinstance(settings.get("max_length"), int):
        raise ModelDirError(f"{root / 'settings.json'}: 'max_length' (an integer) is required")
    warnings = []
    metrics_path = root / "metrics.json"
    metrics = _json(metrics_path) if metrics_path.is_file() else {}
    if not metrics:
        warnings.append(f"{metrics_path} missing: the bundle carries no training metrics")
    cmd_path = root / "command.txt"
    command = cmd_path.read_text(encoding="utf-8").strip() if cmd_path.is_file() else ""
    linear = root / "linear"
    if linear.exists():
        for name in ("linear.json", "linear.npz"):
            if not (linear / name).is_file():
                raise ModelDirError(f"{linear / name}: file is missing (linear/ needs linear.json + linear.npz)")
    return ModelDir(root=root, checkpoint=ckpt, weights=weights, config=config, labels=labels,
                    thresholds=thresholds, thresholds_file=th, global_threshold=float(th.get("global", 0.5)),
                    settings=settings, metrics=metrics, command=command, linear=linear if linear.exists() else None,
                    warnings=warnings)


@dataclass
class SavedModel:
    """A model dir read back whole: its checked files, the prepared splits it was trained on, the fine-tuned
    classifier and tokenizer, and its TF-IDF part (None when it was trained without one)."""
    dir: ModelDir
    splits: object                   # training.dataset.Splits
    model: object
    tokenizer: object
    linear: object


def load_saved(model_dir: str | Path) -> SavedModel:
    """`read_model_dir`, then the data it names (which must have the model's labels in the model's order), the
    classifier with its pooling (`training.modeling.load_classifier`), the tokenizer and the linear part."""
    from transformers import AutoTokenizer

    from deployment.scoring import BundleError, LinearComponent
    from training.data import PrepareError
    from training.dataset import read_splits
    from training.modeling import load_classifier

    md = read_model_dir(model_dir)
    if not md.settings.get("data"):
        raise ModelDirError(f"{md.root / 'settings.json'}: 'data' (the prepared data it was trained on) is required")
    try:
        splits = read_splits(md.settings["data"])
    except PrepareError as e:
        raise ModelDirError(str(e)) from e
    if splits.labels != md.labels:
        raise ModelDirError(f"{md.root / 'labels.json'} does not match {md.settings['data']}/labels.json "
                            "(different labels or order): re-train on this data")
    model = load_classifier(md.checkpoint)
    tok = AutoTokenizer.from_pretrained(md.checkpoint)
    if model.config.num_labels != len(md.labels):
        raise ModelDirError(f"{md.checkpoint} has {model.config.num_labels} outputs but labels.json has "
                            f"{len(md.labels)}")
    linear = None
    if md.linear is not None:
        try:
            linear = LinearComponent.load(md.linear / "linear.json", md.linear / "linear.npz", len(md.labels))
        except BundleError as e:
            raise ModelDirError(str(e)) from e
    return SavedModel(md, splits, model, tok, linear)


# --------------------------------------------------------------------------------------------- writing
def write_model_dir(out: Path, run, linear, ev, history: list, train_info: dict, s, command: str, t0: float,
                    rt) -> dict:
    """Every file of docs/CONTRACTS.md's model dir, built beside `out` and swapped in at the end (an existing `out`
    is replaced only when it is a model dir). `run`: the fine-tuned `backbone.Run`; `ev`: the
    `evaluate.Evaluation`; `history`: the per-step loss and rate. Returns metrics.json's content."""
    from training import plots
    from training.evaluate import model_names
    from training.metrics import markdown_table, per_label_table

    results, final = ev.results, ev.results[ev.final_name]
    names = model_names(ev)
    with replace_dir(out, owned_by=OWNER_FILE, what="model dir") as tmp:
        run.model.save_pretrained(tmp / "checkpoint")
        run.tokenizer.save_pretrained(tmp / "checkpoint")
        (tmp / "labels.json").write_text(json.dumps({lab: i for i, lab in enumerate(run.labels)}, indent=2,
                                                    ensure_ascii=False))
        (tmp / "thresholds.json").write_text(dumps(ev.thresholds, indent=2, ensure_ascii=False))
        if ev.final_name == "blend":
            linear.export(tmp / "linear", ev.weight, ev.label_weights, ev.rule[0])
        settings = asdict(s) | {"pooling_used": run.pooling, "device_used": rt.device, "precision_used": rt.precision,
                                "world_size": rt.world.size, "backbone": run.backbone_name,
                                "backbone_source": run.source, "data": str(Path(s.data).resolve()),
                                "windows": {k: ev.windows[k] for k in ("max_windows", "stride", "pooling")}}
        (tmp / OWNER_FILE).write_text(dumps(settings, indent=2))
        (tmp / "command.txt").write_text(command + "\n")
        train_info["total_seconds"] = round(time.time() - t0, 1)
        label_weights = (dict(zip(run.labels, map(float, ev.label_weights))) if ev.label_weights is not None
                         else None)
        metrics = {"final": ev.final_name, "model": final, **results, "blend_weight": ev.weight,
                   "blend_space": ev.rule[0], "blend_label_weights": label_weights, "blend_search": ev.blend_table,
                   "blend_rule": ev.rule_search,
                   "windows": ev.windows, "train": train_info, "labels": run.labels,
                   "data": str(Path(s.data).resolve())}
        (tmp / "metrics.json").write_text(dumps(metrics, indent=2, ensure_ascii=False))
        table = markdown_table({names[k]: v for k, v in results.items()})
        (tmp / "metrics.md").write_text(f"# Test metrics ({len(run.texts['test'])} rows, thresholds tuned on valid)\n\n"
                                        f"{table}\n## Per label ({names[ev.final_name]})\n\n{per_label_table(final)}")
        (tmp / "history.json").write_text(dumps(history))
        plots.plot_training(history, train_info["epochs"], tmp / "training_curves.png")
        if train_info.get("valid_curve"):
            plots.plot_valid_curve(train_info["valid_curve"], tmp / "valid_curve.png")
        plots.plot_per_label({names[k]: results[k] for k in (ev.final_name, "baseline") if k in results},
                             tmp / "per_label_f1.png")
    return metrics
