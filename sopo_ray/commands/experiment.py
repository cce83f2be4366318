"""`sopo experiment compare|ablate`: SoPo against the base, SFT, offline DPO and online DPO at equal compute over
training seeds, on both held-out splits (and SoPo's ablations); writes results.json, results.md and figures."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from sopo_ray.cli import add_config_args
from sopo_ray.config import load_config
from sopo_ray.errors import SopoError
from sopo_ray.paths import check_output_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `sopo experiment` with its `compare` and `ablate` verbs."""
    parser = subparsers.add_parser(
        "experiment", help="compare SoPo with the baselines over training seeds (and ablate it) on both held-out "
                           "splits",
        description="Train or reuse the base models, reward model and evaluator (cached under workdir), align every "
                    "base with every method once per training seed (experiment.seeds) through the same trainer, "
                    "evaluate all with one seed on the in-distribution and the compositional split, say per metric "
                    "whether SoPo beats each other row, and write results.json, results.md and figures to the "
                    "experiment folder. Finished runs are reused.")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, text in (("compare", "base x method table (experiment.bases, experiment.methods); --ablations adds "
                                   "the ablations"),
                       ("ablate", "SoPo ablations only (experiment.ablations on experiment.ablation_base)")):
        sub = verbs.add_parser(verb, help=text, description=text)
        add_config_args(sub)
        sub.add_argument("--out", default=None, help="experiment folder (default: runs/experiment-<name>)")
        if verb == "compare":
            sub.add_argument("--ablations", action="store_true", help="also run the ablations after the comparison")
        sub.set_defaults(func=run, ablations=verb == "ablate", compare=verb == "compare")


def run(args: argparse.Namespace) -> int:
    """Run the comparison and/or the ablations, then write the tables and figures."""
    from rich.console import Console

    from sopo_ray.experiments import report
    from sopo_ray.experiments.runner import Experiment, base_config, default_out

    cfg = load_config(args.config, args.overrides)
    out = check_output_dir(Path(args.out) if args.out else default_out(cfg), "--out")
    console = Console()
    start = time.time()
    exp = Experiment(cfg, out, console)
    results: dict[str, Any] = exp.results
    if args.compare:
        results = exp.compare()
    if args.ablations:
        results = exp.ablate()
    figures = {}
    if results.get("bases"):
        figures["training curves"] = report.plot_training(results, out / "training_curves.png")
        if cfg.experiment.curve_points:
            figures["oracle accuracy vs steps"] = report.plot_curves(results, out / "oracle_vs_steps.png")
        for kind in results["bases"]:
            try:
                strip = report.filmstrip(base_config(cfg, kind), results, kind, out / f"filmstrip_{kind}.png")
            except SopoError as exc:  # a figure must not cost the tables
                console.print(f"[yellow]warning:[/] no {kind} filmstrip: {str(exc).splitlines()[-1]}")
                continue
            if strip is not None:
                figures[f"{kind.upper()} before / after SoPo"] = strip
    if results.get("ablations"):
        figures["ablations"] = report.plot_ablations(results, out / "ablations.png")
    results["wall_s_last_invocation"] = time.time() - start
    exp.save()
    md = report.write_markdown(results, out / "results.md", figures)
    console.print(md.read_text(), markup=False, highlight=False)
    console.print(f"wrote {out / 'results.json'} and {md} ({time.time() - start:.0f} s)")
    return 0
