"""The model dir's plots: training curves, the valid curve (time to accuracy) and per-label F1 against support.

    from training.plots import draw_valid_curve
    draw_valid_curve(ax, metrics["train"]["valid_curve"])    # on any matplotlib Axes (bench.accuracy, notebooks)

Figures are built with matplotlib's `Figure`, never pyplot, so a caller's (a notebook's) backend is left alone.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_training(history: list[dict], epoch_losses: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    if history:
        steps = [h["step"] for h in history]
        loss = np.array([h["loss"] for h in history])
        k = max(1, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax1.plot(steps, loss, alpha=0.3, label="train loss (step)")
        ax1.plot(steps[k - 1:], smooth, label=f"train loss ({k}-step mean)")
        for e in epoch_losses:
            if e.get("valid_loss") is not None:
                ax1.scatter([e["step"]], [e["valid_loss"]], color="C3", zorder=3)
        ax1.scatter([], [], color="C3", label="valid loss (epoch end)")
        ax2.plot(steps, [h["lr"] for h in history])
    ax1.set(xlabel="optimizer step", ylabel="BCE loss", title="training curves")
    ax1.legend()
    ax2.set(xlabel="optimizer step", ylabel="head learning rate", title="one-cycle schedule")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def draw_valid_curve(ax, points: list[dict], title: str = "time to accuracy") -> None:
    """Valid micro-F1 against minutes: the transformer alone, its blend, and the tf-idf model alone on the same
    rows (see `training.curve`)."""
    minutes = [p["minutes"] for p in points]
    ax.plot(minutes, [p["transformer_micro_f1"] for p in points], marker="o", label="transformer alone")
    if points and "blend_micro_f1" in points[0]:
        ax.plot(minutes, [p["blend_micro_f1"] for p in points], marker="s", label="blend with tf-idf")
        ax.axhline(points[0]["linear_micro_f1"], color="grey", linestyle="--",
                   label=f"tf-idf + logreg alone {points[0]['linear_micro_f1']:.3f}")
    ax.set(xlabel="minutes since the command started", ylabel="valid micro-F1 (first window, best global threshold)",
           title=title)
    ax.legend()


def plot_valid_curve(points: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    draw_valid_curve(fig.subplots(), points)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_per_label(reports: dict[str, dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for i, (name, rep) in enumerate(reports.items()):
        sup = [m["support"] for m in rep["per_label"].values()]
        f1 = [m["f1"] for m in rep["per_label"].values()]
        ax.scatter(sup, f1, label=f"{name} (macro-F1 {rep['macro_f1']:.3f})", alpha=0.7, marker="os^"[i % 3])
    ax.set_xscale("log")
    ax.set(xlabel="test support (log)", ylabel="test F1", title="per-label F1 against support", ylim=(-0.02, 1.02))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
