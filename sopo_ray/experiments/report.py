"""Tables and figures of `sopo experiment` from its results.json: results.md (per base and held-out split the
comparison over training seeds and SoPo's verdict against every other row), training curves, oracle accuracy vs
steps, ablation plots, and a filmstrip of the same held-out captions before and after SoPo."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sopo_ray.evaluation.protocol import COLUMNS
from sopo_ray.evaluation.tables import HEADERS, cell, markdown
from sopo_ray.plotting import by_step, pyplot, save, series, smooth
from sopo_ray.tracking import read_metrics

# The paper's columns, ours, then the oracle on every motion of the split (`evaluation.protocol.oracle_per_motion`).
TABLE_COLUMNS = (*COLUMNS, "Oracle-all")
LABELS = {"base": "base", "sft": "SFT", "offline_dpo": "offline DPO", "online_dpo": "online DPO", "sopo": "SoPo"}


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


SPLIT_NAMES = {"test": "in-distribution test split", "compositional": "compositional split"}
MARK = {"better": "better", "worse": "**worse**", "tie": "tie"}


def seeds_table(results: dict[str, Any], kind: str, split: str) -> list[str]:
    """Markdown rows of one base's table on one split: Real, base and every method (mean ± 95% CI over the
    training seeds), with each method's training cost."""
    entry = results["bases"][kind]
    result = entry["splits"][split]
    pre = entry["pretrain"]
    head = ["model", *(HEADERS[k] for k in TABLE_COLUMNS), "align wall s", "wall / pretrain", "passes / pretrain"]
    rows: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] = [("real motions", result["real"], []),
                                                                     (f"{kind.upper()} base", result["base"], [])]
    for method, row in result["methods"].items():
        runs = [entry["runs"][f"{method}/seed-{s}"] for s in entry["seeds"]]
        rows.append((f"{kind.upper()} + {LABELS[method]}", row["mean"], runs))
    cells = []
    for name, table, runs in rows:
        cost = ["-", "-", "-"]
        if runs:
            wall = sum(r["wall_s"] for r in runs) / len(runs)
            passes = sum(r["cost"]["sample_passes"] for r in runs) / len(runs)
            cost = [f"{wall:.0f}", _ratio(wall, pre["wall_s"]), _ratio(passes, pre["sample_passes"])]
        cells.append([name, *(cell(table.get(k)) for k in TABLE_COLUMNS), *cost])
    return markdown(head, cells)


def verdict_table(results: dict[str, Any], kind: str, split: str) -> list[str]:
    """Markdown rows: does SoPo beat each other row, per metric (disjoint 95% intervals; `experiments.seeds`)."""
    result = results["bases"][kind]["splits"][split]
    if "verdict" not in result:
        return []
    keys = [k for k in TABLE_COLUMNS if any(k in v for v in result["verdict"].values())]
    return markdown(["SoPo against", *(HEADERS[k] for k in keys)],
                    [[f"{kind.upper()} base" if other == "base" else LABELS[other],
                      *(MARK[marks[k]] if k in marks else "-" for k in keys)]
                     for other, marks in result["verdict"].items()])


def delta_table(title: str, deltas: dict[str, dict[str, list[float]]]) -> list[str]:
    """Markdown rows of signed differences, one row per method: `mean±ci` per metric, '-' where it is missing."""
    keys = [k for k in TABLE_COLUMNS if any(k in row for row in deltas.values())]
    return markdown([title, *(HEADERS[k] for k in keys)],
                    [[LABELS[method], *(f"{row[k][0]:+.3f}±{row[k][1]:.3f}" if k in row else "-" for k in keys)]
                     for method, row in deltas.items()])


def vs_base_table(results: dict[str, Any], kind: str, split: str) -> list[str]:
    """Markdown rows: every method's change from the base per metric, mean ± t 95% CI over its training seeds
    (`experiments.seeds.delta_over_seeds`: the base is one fixed model scored on the same samples)."""
    methods = results["bases"][kind]["splits"][split]["methods"]
    if not all("vs_base" in row for row in methods.values()):
        return []
    return delta_table("Δ from the base, over seeds", {method: row["vs_base"] for method, row in methods.items()})


def sopo_minus_table(results: dict[str, Any], kind: str, split: str) -> list[str]:
    """Markdown rows: SoPo minus every other method seed by seed, mean ± t 95% CI over the seeds
    (`experiments.seeds.paired_delta_over_seeds`); an interval that excludes 0 resolves the difference."""
    minus = results["bases"][kind]["splits"][split].get("sopo_minus")
    return delta_table("SoPo − method, same seed", minus) if minus else []


def pretrain_line(results: dict[str, Any], kind: str) -> str:
    pre = results["bases"][kind]["pretrain"]
    wall = "-" if pre["wall_s"] is None else f"{pre['wall_s']:.0f} s" + (" (estimated)" if pre["estimated"] else "")
    return (f"Pretraining of the {kind.upper()} base: {pre['steps']} steps, {wall}, "
            f"{pre['sample_passes']:,} sample-passes.")


def ablation_table(results: dict[str, Any]) -> list[str]:
    """Markdown rows of the ablations: one row per run, the changed key first."""
    abl = results["ablations"]
    keys = ("R@1", "R@3", "FID", "MM-Dist", "Diversity", "Oracle", "Reward")
    default = "default (" + ", ".join(f"{k.split('.')[-1]}={v}" for k, v in abl["defaults"].items()) + ")"
    cells = []
    for name, row in abl["rows"].items():
        below = "-" if row["below_tau"] is None else f"{row['below_tau']:.2f}"
        cells.append([default if name == "default" else name, *(cell(row["eval"].get(k)) for k in keys), below,
                      f"{row['run']['wall_s']:.0f}"])
    return markdown(["setting", *(HEADERS[k] for k in keys), "r(x^l)<tau", "wall s"], cells)


def _series(run_dir: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    return series(by_step(read_metrics(run_dir / "metrics.jsonl")), key)


def plot_training(results: dict[str, Any], out_png: Path) -> Path:
    """Per base: loss and reward of the trained groups (best of K, and r(x^l)) against the learner step."""
    plt = pyplot()
    kinds = list(results["bases"])
    fig, axes = plt.subplots(len(kinds), 2, figsize=(12, 3.8 * len(kinds)), squeeze=False)
    for row, kind in zip(axes, kinds, strict=True):
        sft_axis = row[0].twinx()
        for i, (method, run_dir_name) in enumerate(results["bases"][kind]["dirs"].items()):
            run_dir = Path(run_dir_name)
            x, y = _series(run_dir, "loss/loss")
            ax = sft_axis if method == "sft" else row[0]
            ax.plot(x, smooth(y), color=f"C{i}", label=LABELS[method] + (" (right axis)" if method == "sft" else ""))
            for key, style in (("reward/best", "-"), ("reward/x_l", ":")):
                x, y = _series(run_dir, key)
                if len(y):
                    row[1].plot(x, smooth(y), style, color=f"C{i}", label=f"{LABELS[method]} {key.split('/')[1]}")
        row[0].set_title(f"{kind.upper()}: training loss (smoothed; DPO-style left, SFT right)")
        sft_axis.legend(fontsize=7, loc="lower right")
        row[1].set_title(f"{kind.upper()}: reward of trained groups (— best of K, ··· x^l)")
        for ax in row:
            ax.set_xlabel("learner step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    return save(fig, out_png)


def plot_curves(results: dict[str, Any], out_png: Path) -> Path:
    """Per base: oracle accuracy and mean reward of intermediate checkpoints against the learner step."""
    plt = pyplot()
    kinds = list(results["bases"])
    fig, axes = plt.subplots(len(kinds), 2, figsize=(12, 3.8 * len(kinds)), squeeze=False)
    for row, kind in zip(axes, kinds, strict=True):
        for i, (method, points) in enumerate(results["bases"][kind]["curves"].items()):
            steps = [p["step"] for p in points]
            for ax, key in zip(row, ("Oracle", "Reward"), strict=True):
                ax.plot(steps, [p[key][0] for p in points], "o-", color=f"C{i}", label=LABELS[method])
        row[0].set_title(f"{kind.upper()}: oracle accuracy on held-out captions")
        row[1].set_title(f"{kind.upper()}: mean reward r(x, c) on held-out captions")
        for ax in row:
            ax.set_xlabel("learner step (0 = base)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    return save(fig, out_png)


def plot_ablations(results: dict[str, Any], out_png: Path) -> Path:
    """One panel per ablated key: oracle accuracy (left axis) and R@1 (right axis) with 95% CIs."""
    plt = pyplot()
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
    return save(fig, out_png)


def filmstrip(cfg: Any, results: dict[str, Any], kind: str, out_png: Path, frames: int = 6) -> Path | None:
    """The same held-out captions (same length and noise) from the base model and from the SoPo policy."""
    from sopo_ray import artifacts
    from sopo_ray.data import load_dataset
    from sopo_ray.experiments.jobs import run_jobs
    from sopo_ray.motion.features import features_to_joints
    from sopo_ray.motion.render import render_filmstrip

    dirs = results["bases"][kind]["dirs"]
    if "sopo" not in dirs:
        return None
    test = load_dataset(cfg.data, "test")
    rng = np.random.default_rng(cfg.seed)
    idx = rng.choice(len(test), min(cfg.experiment.filmstrip_captions, len(test)), replace=False)
    captions = [test.captions[i][0] for i in idx]
    seeds = [int(s) for s in rng.integers(0, 2**31 - 1, len(idx))]
    job = {"kind": "samples", "split": "test", "indices": idx.tolist(), "captions": captions, "seeds": seeds}
    policy = str(Path(dirs["sopo"], "policy.pt").resolve())
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
    """results.md: per base and split the comparison and SoPo's verdict, the ablation table and the figures."""
    cfg = results["config"]
    ev, e = cfg["evaluator"], cfg["experiment"]
    lines = [f"# {cfg['name']}: SoPo vs baselines", "",
             f"Every method trained with {len(e['seeds'])} seeds ({', '.join(map(str, e['seeds']))}); a method's "
             f"numbers are the mean ± 95% CI (Student's t) over its seeds of each policy's mean over "
             f"{ev['replications']} evaluation replications x {ev['num_captions']} captions (the base and the real "
             f"motions: ± over replications). {cfg['diffusion']['sample_steps']} DDIM steps, guidance "
             f"{cfg['diffusion']['guidance_scale']}. Every method: {cfg['schedule']['total_steps']} learner steps x "
             f"batch {cfg['schedule']['batch_size']} (equal learner compute). 'better'/'worse': the 95% intervals "
             "do not overlap.", ""]
    for kind, entry in results.get("bases", {}).items():
        for split in entry["splits"]:
            lines += [f"## {kind.upper()} base, {SPLIT_NAMES.get(split, split)}", "",
                      *seeds_table(results, kind, split), "", *verdict_table(results, kind, split), "",
                      *vs_base_table(results, kind, split), "", *sopo_minus_table(results, kind, split), ""]
        lines += [pretrain_line(results, kind), ""]
    if "ablations" in results:
        abl = results["ablations"]
        lines += [f"## Ablations (SoPo on the {abl['base'].upper()} base, {abl['steps']} steps, seed {abl['seed']}, "
                  f"{abl['replications']} replications, in-distribution test split)", "", *ablation_table(results), ""]
    for title, path in figures.items():
        lines += [f"![{title}]({path.name})", ""]
    out_md.write_text("\n".join(lines))
    return out_md
