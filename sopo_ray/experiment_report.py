"""Tables and figures of `sopo experiment` from its results.json: results.md, training curves, oracle accuracy vs
steps, ablation plots, and a filmstrip of the same held-out captions before and after SoPo."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sopo_ray.evaluation.protocol import COLUMNS
from sopo_ray.tracking import read_metrics

HEADERS = {"R@1": "R@1 ↑", "R@2": "R@2 ↑", "R@3": "R@3 ↑", "FID": "FID ↓", "MM-Dist": "MM-Dist ↓",
           "Diversity": "Div →", "MultiModality": "MModality", "Oracle": "Oracle ↑", "Reward": "Reward ↑"}
LABELS = {"base": "base", "sft": "SFT", "offline_dpo": "offline DPO", "online_dpo": "online DPO", "sopo": "SoPo"}


def cell(value: list[float] | None, digits: int = 3) -> str:
    """`mean±ci` or '-'."""
    if value is None:
        return "-"
    return f"{value[0]:.{digits}f}±{value[1]:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def comparison_table(results: dict[str, Any], kind: str) -> list[str]:
    """Markdown rows of the main table of one base: Real, base and every method, with training cost."""
    entry = results["bases"][kind]
    pre = entry["pretrain"]
    head = ["model", *(HEADERS[k] for k in COLUMNS), "align wall s", "wall / pretrain", "passes / pretrain"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    rows: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
    if results.get("real"):
        rows.append(("real motions", results["real"], None))
    rows.append((f"{kind.upper()} base", entry["base"], None))
    rows += [(f"{kind.upper()} + {LABELS[m]}", v["eval"], v["run"]) for m, v in entry["methods"].items()]
    for name, table, run in rows:
        cost = ["-", "-", "-"]
        if run is not None:
            cost = [f"{run['wall_s']:.0f}", _ratio(run["wall_s"], pre["wall_s"]),
                    _ratio(run["cost"]["sample_passes"], pre["sample_passes"])]
        lines.append("| " + " | ".join([name, *(cell(table.get(k)) for k in COLUMNS), *cost]) + " |")
    wall = "-" if pre["wall_s"] is None else f"{pre['wall_s']:.0f} s" + (" (estimated)" if pre["estimated"] else "")
    lines += ["", f"Pretraining of the {kind.upper()} base: {pre['steps']} steps, {wall}, "
                  f"{pre['sample_passes']:,} sample-passes."]
    return lines


def ablation_table(results: dict[str, Any]) -> list[str]:
    """Markdown rows of the ablations: one row per run, the changed key first."""
    abl = results["ablations"]
    keys = ("R@1", "R@3", "FID", "MM-Dist", "Diversity", "Oracle", "Reward")
    head = ["setting", *(HEADERS[k] for k in keys), "r(x^l)<tau", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, row in abl["rows"].items():
        label = "default (" + ", ".join(f"{k.split('.')[-1]}={v}" for k, v in abl["defaults"].items()) + ")" \
            if name == "default" else name
        below = "-" if row["below_tau"] is None else f"{row['below_tau']:.2f}"
        lines.append("| " + " | ".join([label, *(cell(row["eval"].get(k)) for k in keys), below,
                                        f"{row['run']['wall_s']:.0f}"]) + " |")
    return lines


def _smooth(values: np.ndarray, window: int = 10) -> np.ndarray:
    if len(values) < window:
        return values
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, np.ones(window) / window, mode="valid")


def _series(run_dir: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    steps = {r["step"]: r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("event") == "step"}
    pairs = [(s, steps[s][key]) for s in sorted(steps) if isinstance(steps[s].get(key), int | float)]
    if not pairs:
        return np.zeros(0), np.zeros(0)
    x, y = zip(*pairs, strict=True)
    return np.asarray(x, float), np.asarray(y, float)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, out_png: Path) -> Path:
    """Lay out, write (90 dpi) and close a figure; returns the path."""
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png


def plot_training(results: dict[str, Any], out_png: Path) -> Path:
    """Per base: loss and reward of the trained groups (best of K, and r(x^l)) against the learner step."""
    plt = _plt()
    kinds = list(results["bases"])
    fig, axes = plt.subplots(len(kinds), 2, figsize=(12, 3.8 * len(kinds)), squeeze=False)
    for row, kind in zip(axes, kinds, strict=True):
        sft_axis = row[0].twinx()
        for i, (method, entry) in enumerate(results["bases"][kind]["methods"].items()):
            run_dir = Path(entry["dir"])
            x, y = _series(run_dir, "loss/loss")
            ax = sft_axis if method == "sft" else row[0]
            ax.plot(x, _smooth(y), color=f"C{i}", label=LABELS[method] + (" (right axis)" if method == "sft" else ""))
            for key, style in (("reward/best", "-"), ("reward/x_l", ":")):
                x, y = _series(run_dir, key)
                if len(y):
                    row[1].plot(x, _smooth(y), style, color=f"C{i}", label=f"{LABELS[method]} {key.split('/')[1]}")
        row[0].set_title(f"{kind.upper()}: training loss (smoothed; DPO-style left, SFT right)")
        sft_axis.legend(fontsize=7, loc="lower right")
        row[1].set_title(f"{kind.upper()}: reward of trained groups (— best of K, ··· x^l)")
        for ax in row:
            ax.set_xlabel("learner step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    return _save(plt, fig, out_png)


def plot_curves(results: dict[str, Any], out_png: Path) -> Path:
    """Per base: oracle accuracy and mean reward of intermediate checkpoints against the learner step."""
    plt = _plt()
    kinds = list(results["bases"])
    fig, axes = plt.subplots(len(kinds), 2, figsize=(12, 3.8 * len(kinds)), squeeze=False)
    for row, kind in zip(axes, kinds, strict=True):
        for i, (method, entry) in enumerate(results["bases"][kind]["methods"].items()):
            points = entry["curve"]
            steps = [p["step"] for p in points]
            for ax, key in zip(row, ("Oracle", "Reward"), strict=True):
                ax.plot(steps, [p[key][0] for p in points], "o-", color=f"C{i}", label=LABELS[method])
        row[0].set_title(f"{kind.upper()}: oracle accuracy on held-out captions")
        row[1].set_title(f"{kind.upper()}: mean reward r(x, c) on held-out captions")
        for ax in row:
            ax.set_xlabel("learner step (0 = base)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    return _save(plt, fig, out_png)


def plot_ablations(results: dict[str, Any], out_png: Path) -> Path:
    """One panel per ablated key: oracle accuracy (left axis) and R@1 (right axis) with 95% CIs."""
    plt = _plt()
    abl = results["ablations"]
    keys = list(abl["defaults"])
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        points = [(float(abl["defaults"][key]), abl["rows"]["default"]["eval"])]
        points += [(float(name.split("=", 1)[1]), row["eval"]) for name, row in abl["rows"].items()
                   if name.startswith(f"{key}=")]
        points.sort(key=lambda p: p[0])
        x = [p[0] for p in points]
        ax.errorbar(x, [p[1]["Oracle"][0] for p in points], [p[1]["Oracle"][1] for p in points], fmt="o-",
                    color="C0", capsize=3, label="oracle")
        twin = ax.twinx()
        twin.errorbar(x, [p[1]["R@1"][0] for p in points], [p[1]["R@1"][1] for p in points], fmt="s--",
                      color="C3", capsize=3, label="R@1")
        ax.axvline(float(abl["defaults"][key]), color="grey", alpha=0.4)
        ax.set_title(key)
        ax.set_ylabel("oracle accuracy", color="C0")
        twin.set_ylabel("R@1", color="C3")
        ax.grid(alpha=0.3)
    return _save(plt, fig, out_png)


def filmstrip(cfg: Any, results: dict[str, Any], kind: str, out_png: Path, frames: int = 6) -> Path | None:
    """The same held-out captions (same length and noise) from the base model and from the SoPo policy."""
    from sopo_ray import artifacts
    from sopo_ray.data.store import load_dataset
    from sopo_ray.experiment_eval import run_jobs
    from sopo_ray.motion.features import features_to_joints
    from sopo_ray.motion.render import render_filmstrip

    methods = results["bases"][kind]["methods"]
    if "sopo" not in methods:
        return None
    test = load_dataset(cfg.data, "test")
    rng = np.random.default_rng(cfg.seed)
    idx = rng.choice(len(test), min(cfg.experiment.filmstrip_captions, len(test)), replace=False)
    captions = [test.captions[i][0] for i in idx]
    seeds = [int(s) for s in rng.integers(0, 2**31 - 1, len(idx))]
    job = {"kind": "samples", "indices": idx.tolist(), "captions": captions, "seeds": seeds}
    policy = str(Path(methods["sopo"]["dir"], "policy.pt").resolve())
    base, aligned = run_jobs(cfg, [{**job, "checkpoint": str(artifacts.base_path(cfg).resolve())},
                                   {**job, "checkpoint": policy}])
    joints, labels = [], []
    for j, (i, caption) in enumerate(zip(idx, captions, strict=True)):
        n = int(test.lengths[i])
        for name, out in (("base", base), ("SoPo", aligned)):
            joints.append(features_to_joints(out["features"][j, :n]))
            labels.append(f"{kind.upper()} {name}: {caption}")
    return render_filmstrip(joints, labels, out_png, frames=frames)


def write_markdown(results: dict[str, Any], out_md: Path, figures: dict[str, Path]) -> Path:
    """results.md: the comparison tables, the ablation table and the figures."""
    cfg = results["config"]
    ev = cfg["evaluator"]
    lines = [f"# {cfg['name']}: SoPo vs baselines (seed {cfg['seed']})", "",
             f"Test split, mean ± 95% CI over {ev['replications']} replications x {ev['num_captions']} captions, "
             f"{cfg['diffusion']['sample_steps']} DDIM steps, guidance {cfg['diffusion']['guidance_scale']}. "
             f"Every method: {cfg['schedule']['total_steps']} learner steps x batch {cfg['schedule']['batch_size']}.",
             ""]
    for kind in results.get("bases", {}):
        lines += [f"## {kind.upper()} base", "", *comparison_table(results, kind), ""]
    if "ablations" in results:
        abl = results["ablations"]
        lines += [f"## Ablations (SoPo on the {abl['base'].upper()} base, {abl['steps']} steps, "
                  f"{abl['replications']} replications)", "", *ablation_table(results), ""]
    for title, path in figures.items():
        lines += [f"![{title}]({path.name})", ""]
    out_md.write_text("\n".join(lines))
    return out_md
