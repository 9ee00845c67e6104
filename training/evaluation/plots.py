"""The report's figures (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen before pyplot is imported
import numpy as np  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from training.evaluation.harness import FoldResult, Pooled  # noqa: E402


def roc_pr(pooled: Sequence[Pooled], out: Path) -> list[str]:
    """Flow-level ROC and PR curves over all held-out flows, one line per detector."""
    usable = [p for p in pooled if 0 < p.flow_y.sum() < len(p.flow_y)]
    if not usable:
        return []
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(12, 5))
    for p in usable:
        fpr, tpr, _ = roc_curve(p.flow_y, p.flow_margin)
        roc_ax.plot(fpr, tpr, label=f"{p.detector} (AUC {p.flow['roc_auc']:.3f})")
        roc_ax.scatter([p.flow["fpr"]], [p.flow["recall"]], s=25)
        precision, recall, _ = precision_recall_curve(p.flow_y, p.flow_margin)
        pr_ax.plot(recall, precision, label=f"{p.detector} (AP {p.flow['pr_auc']:.3f})")
        pr_ax.scatter([p.flow["recall"]], [p.flow["precision"]], s=25)
    roc_ax.axvline(0.01, color="grey", ls=":", lw=0.8)
    roc_ax.set(
        xscale="log",
        xlim=(1e-4, 1),
        xlabel="false-positive rate (log: the operating region is 1 % and below)",
        ylabel="recall",
        title="ROC (flows)",
    )
    pr_ax.set(xlabel="recall", ylabel="precision", title="precision-recall (flows)")
    for ax in (roc_ax, pr_ax):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("held-out flows, all folds; dots: the operating point (threshold set on training data)")
    fig.tight_layout()
    fig.savefig(out / "roc_pr.png", dpi=110)
    plt.close(fig)
    return ["roc_pr.png"]


def confusion(pooled: Sequence[Pooled], out: Path) -> list[str]:
    fig, axes = plt.subplots(1, len(pooled), figsize=(2.6 * len(pooled), 2.8), squeeze=False)
    for ax, p in zip(axes[0], pooled, strict=True):
        m = np.array([[p.flow["tn"], p.flow["fp"]], [p.flow["fn"], p.flow["tp"]]])
        ax.imshow(m / np.maximum(m.sum(axis=1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{v}", ha="center", va="center", fontsize=8)
        ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["benign", "alert"], yticklabels=["benign", "malicious"])
        ax.set_title(p.detector, fontsize=9)
    fig.suptitle("flow-level confusion matrices (rows: truth; colour: share of the row)")
    fig.tight_layout()
    fig.savefig(out / "confusion.png", dpi=110)
    plt.close(fig)
    return ["confusion.png"]


def timeline(result: FoldResult, names: Sequence[str], out: Path) -> list[str]:
    """One held-out capture: when its malicious windows were, and which each detector flagged."""
    test = result.fold.test
    if not test.malicious.any():
        return []
    starts = np.array([w["window_start"] for w in test.windows])
    t0 = starts.min()
    hours = (starts - t0) / 3600.0
    rows = ["truth: malicious window", *names]
    fig, ax = plt.subplots(figsize=(12, 0.5 * len(rows) + 1.5))
    ax.scatter(hours[test.malicious], np.zeros(test.malicious.sum()), marker="|", color="red", s=80)
    ax.scatter(hours[~test.malicious], np.zeros((~test.malicious).sum()), marker="|", color="lightgrey", s=40)
    for i, name in enumerate(names, 1):
        o = result.outcomes[name]
        tp, fp = o.flagged & test.malicious, o.flagged & ~test.malicious
        ax.scatter(hours[tp], np.full(tp.sum(), i), marker="|", color="tab:blue", s=80)
        ax.scatter(hours[fp], np.full(fp.sum(), i), marker="|", color="tab:orange", s=80)
    ax.set(yticks=range(len(rows)), yticklabels=rows, xlabel="hours since the capture's first window")
    ax.invert_yaxis()
    ax.set_title(
        f"{result.fold.name}: windows (grey benign, red malicious); alerts (blue on malicious, orange on benign)"
    )
    fig.tight_layout()
    fig.savefig(out / "timeline.png", dpi=110)
    plt.close(fig)
    return ["timeline.png"]


def bars(values: dict[str, float], title: str, xlabel: str, out: Path, filename: str) -> list[str]:
    if not values:
        return []
    names = sorted(values, key=values.__getitem__)
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(names) + 1.2))
    ax.barh(names, [values[n] for n in names], color="tab:blue")
    ax.set(title=title, xlabel=xlabel)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / filename, dpi=110)
    plt.close(fig)
    return [filename]
