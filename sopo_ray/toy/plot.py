"""The `sopo toy` figure: samples of the reference and of the three aligned policies over the preference landscape,
and the learning curves of mean true preference and spread."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot loads)
import torch  # noqa: E402

from sopo_ray.toy.align import ToyResult  # noqa: E402
from sopo_ray.toy.world import BOX, METHODS, true_preference  # noqa: E402

TITLES = {"reference": "reference (pretrained)", "offline_dpo": "offline DPO (fixed pairs)",
          "online_dpo": "online DPO (best vs worst sample)", "sopo": "SoPo (offline x^w, online x^l)"}
"""Panel titles by method key."""
COLORS = {"offline_dpo": "tab:red", "online_dpo": "tab:purple", "sopo": "tab:blue"}
"""Curve colour by method."""


def plot_toy(result: ToyResult, path: Path) -> Path:
    """Five panels: reference, offline DPO, online DPO, SoPo, learning curves; writes a PNG and returns its path."""
    world = result.world
    grid = torch.linspace(-BOX, BOX, 200)
    gx, gy = torch.meshgrid(grid, grid, indexing="xy")
    plane = torch.stack([gx.flatten(), gy.flatten()], dim=1)
    pref = true_preference(plane).view(200, 200)
    reward = world.reward(plane).view(200, 200)
    fig, axes = plt.subplots(1, 5, figsize=(22, 4.8))
    for ax, key in zip(axes[:4], ("reference", *METHODS), strict=True):
        ax.contourf(gx, gy, pref, levels=12, cmap="Greens", alpha=0.85)
        ax.contour(gx, gy, reward, levels=[0.25, 0.5, 0.75], colors="darkorange", linewidths=0.8,
                   linestyles="dashed")
        points = result.samples[key]
        ax.scatter(points[:, 0], points[:, 1], s=2, c="tab:blue", alpha=0.35, linewidths=0)
        if key in ("offline_dpo", "sopo"):
            ax.scatter(world.preferred[:, 0], world.preferred[:, 1], s=16, marker="+", c="black",
                       label="offline preferred x^w")
        if key == "offline_dpo":
            ax.scatter(world.unpreferred[:, 0], world.unpreferred[:, 1], s=14, marker="x", c="tab:red",
                       label="offline unpreferred x^l")
            ax.legend(loc="lower right", fontsize=7)
        m = result.metrics[key]
        ax.set_title(f"{TITLES[key]}\ntrue preference {m['mean_true_preference']:.3f} · modes "
                     f"{m['modes_covered']}/2 · spread {m['spread']:.2f}", fontsize=9)
        ax.set(xlim=(-BOX, BOX), ylim=(-BOX, BOX), aspect="equal")
    axes[0].legend(handles=[plt.Line2D([], [], color="darkorange", ls="--", label="reward model r = .25/.5/.75"),
                            plt.Line2D([], [], marker="o", ls="", color="tab:blue", label="policy samples")],
                   loc="lower right", fontsize=7)

    ax, ax_spread = axes[4], axes[4].twinx()
    ax.axhline(result.metrics["reference"]["mean_true_preference"], color="gray", lw=1, label="reference")
    for method in METHODS:
        curve = result.metrics[method]["curve"]
        steps = [row["step"] for row in curve]
        ax.plot(steps, [row["true_preference"] for row in curve], color=COLORS[method], label=method)
        ax_spread.plot(steps, [row["spread"] for row in curve], color=COLORS[method], ls=":", lw=1)
    ax.set(xlabel="alignment step", ylabel="mean true preference (solid)", ylim=(0, None))
    ax_spread.set(ylabel="spread (dotted)", ylim=(0, None))
    ax.set_title("learning curves (500 samples each point)", fontsize=9)
    ax.legend(loc="upper left", fontsize=7)
    fig.suptitle(f"2-D toy, seed {result.settings.seed}: green = ground-truth preference; same reference and budget "
                 f"({result.settings.steps} steps) for the three methods; SoPo tau = {result.tau:.3f}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
