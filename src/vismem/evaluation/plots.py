"""PNG plots of an evaluation report (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_vs_k(result: dict[str, Any], path: Path, title: str = "") -> Path:
    """Accuracy against k per voting rule, with prototypes and the linear probe as lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for rule, curve in result["curves"].items():
        ax.plot(result["ks"], [100 * a for a in curve], marker="o", markersize=3, label=rule)
    # through each fitted transform: the rank and plurality curves, dashed
    for name, entry in result.get("transforms", {}).items():
        if name == "none" or "curves" not in entry:
            continue
        for rule in ("rank", "plurality"):
            ax.plot(result["ks"], [100 * a for a in entry["curves"][rule]], linestyle="--", marker=".",
                    markersize=3, label=f"{rule}, {name}")
    for (m, acc), style in zip(result["prototypes"].items(), (":", "-.", (0, (1, 4))), strict=False):
        ax.axhline(100 * acc, linestyle=style, color="grey", label=f"prototypes ({m}/class)")
    if "linear_probe" in result:
        ax.axhline(100 * result["linear_probe"]["accuracy"], linestyle="--", color="black", label="linear probe")
    ax.set_xscale("log")
    return _finish(plt, fig, ax, path, "k (neighbours)", title or "accuracy against k")


def plot_incremental(result: dict[str, Any], path: Path, title: str = "") -> Path:
    """Accuracy after each class-incremental step, and old-class accuracy after each addition."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, history in result["history"].items():
        steps = [e["step"] for e in history]
        ax.plot(steps, [100 * e["accuracy"] for e in history], marker="o", label=f"{method}: all seen classes")
        old = [(e["step"], 100 * e["old_after"]) for e in history if "old_after" in e]
        if old:
            ax.plot(*zip(*old, strict=False), linestyle="--", marker="x", label=f"{method}: old classes after the step")
    ax.set_xticks([e["step"] for e in next(iter(result["history"].values()))])
    return _finish(plt, fig, ax, path, "step (classes added)", title or "class-incremental")


def _finish(plt, fig, ax, path: Path, xlabel: str, title: str) -> Path:
    """The labelling, legend, grid and save both accuracy plots share."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(report: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """report.json plus PNG plots for the protocols that have one; returns the file paths."""
    import json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    name = report["dataset"]["name"]
    if "knn" in report:
        files["accuracy_vs_k"] = str(plot_accuracy_vs_k(report["knn"], out_dir / "accuracy_vs_k.png",
                                                        f"{name}: accuracy against k"))
    if "incremental" in report:
        files["incremental"] = str(plot_incremental(report["incremental"], out_dir / "incremental.png",
                                                    f"{name}: class-incremental"))
    report = {**report, "plots": files}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    files["report"] = str(out_dir / "report.json")
    return files
