"""`sopo experiment compare|ablate`: SoPo against the base, SFT, offline DPO and online DPO, over training seeds.

    compare   for each base kind (experiment.bases): pretrain it or reuse {workdir}/base/<kind>/base.pt, reuse or
              train the reward model and the evaluator; align it with every method (experiment.methods) once per
              training seed (experiment.seeds), all with the same learner steps and batch (equal learner
              compute); evaluate the base, every aligned policy and the real motions on every held-out split
              (in-distribution test, then compositional) with one evaluation seed; aggregate each method over its
              seeds (`experiments.seeds`) and say per metric whether SoPo beats each other row
    ablate    SoPo on experiment.ablation_base, one run per value of each key of experiment.ablations

Runs go through `experiment.trainer`: `local` (the single-process loop, two runs side by side as Ray tasks of
one CPU each) or `ray` (the distributed Driver, one run at a time); both train the same pairs the same way.

Layout of the experiment folder (each run directory is an ordinary alignment run directory):

    <out>/<kind>/<method>/seed-<s>/   config.yaml, metrics.jsonl, checkpoints, policy.pt, done.json,
                                      eval_<split>.json
    <out>/<kind>/base_eval_<split>.json, <out>/<kind>/real_eval_<split>.json
    <out>/ablations/<key>=<value>/
    <out>/results.json, results.md, *.png

Finished runs (done.json) and evaluations (eval_*.json) are reused, so an interrupted experiment continues where
it stopped; a run directory without done.json is started again from scratch.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from sopo_ray import artifacts
from sopo_ray.config import Config, config_to_dict, with_overrides
from sopo_ray.data import eval_splits
from sopo_ray.errors import SopoError
from sopo_ray.experiments.cost import alignment_cost, pretrain_cost
from sopo_ray.experiments.jobs import align_jobs, model_paths, run_jobs
from sopo_ray.experiments.seeds import delta_over_seeds, over_seeds, paired_delta_over_seeds, verdict
from sopo_ray.tracking import read_metrics


class ExperimentError(SopoError):
    """An aligned run of the experiment failed (the message names the run directory)."""


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2))
    tmp.replace(path)


def base_config(cfg: Config, kind: str) -> Config:
    """The experiment's config for one base kind (model.kind plus experiment.base_overrides[kind])."""
    return with_overrides(cfg, [f"model.kind={kind}", *cfg.experiment.base_overrides.get(kind, [])])


def run_config(cfg: Config, method: str, run_dir: Path, extra: list[str] | None = None, seed: int | None = None
               ) -> Config:
    """The config of one aligned run: the method and training seed, no live view, no per-run final evaluation
    (the experiment evaluates everything with one seed), and checkpoints kept at the curve points."""
    cfg = with_overrides(cfg, [f"objective.name={method}", *(extra or [])])
    points = max(cfg.experiment.curve_points, 1)
    interval = max(1, cfg.schedule.total_steps // points)
    return with_overrides(cfg, [
        "log.final_eval=false", "log.live_view=false", f"output_dir={run_dir}",
        f"name={cfg.name}-{cfg.model.kind}-{method}", f"checkpoint.interval={interval}",
        f"checkpoint.keep={points + 1}", *([f"seed={seed}"] if seed is not None else [])])


class Experiment:
    """One experiment folder; `compare()` and `ablate()` fill it and return results.json's dict."""

    def __init__(self, cfg: Config, out: Path, console: Console | None = None) -> None:
        self.cfg, self.out = cfg, Path(out)
        self.console = console or Console()
        self.results_path = self.out / "results.json"
        self.results: dict[str, Any] = _read_json(self.results_path) or {}
        self.results["config"] = config_to_dict(cfg)

    def save(self) -> Path:
        """Write results.json (atomically)."""
        _write_json(self.results_path, self.results)
        return self.results_path

    # ------------------------------------------------------------------------------------------------
    # Inputs: base model, reward model, evaluator (timed when built here)
    # ------------------------------------------------------------------------------------------------

    def prepare(self, cfg: Config) -> artifacts.Artifacts:
        """Build or reuse the dataset, base model, reward model and evaluator of `cfg`, recording build times."""
        from sopo_ray.distributed import cluster
        from sopo_ray.distributed.ray_logs import driver_log_level

        builders = [(artifacts.base_path(cfg), lambda p: artifacts.build_base(cfg, p, None, self.console)),
                    (artifacts.reward_path(cfg), lambda p: artifacts.build_reward(cfg, p, self.console)),
                    (artifacts.evaluator_path(cfg), lambda p: artifacts.build_evaluator(cfg, p, self.console))]
        for path, build in builders:
            if not path.is_file():
                self.console.print(f"[bold]building[/] {path}")
                start = time.time()
                build(path)
                _write_json(path.parent / "build_time.json", {"wall_s": time.time() - start})
        art = artifacts.resolve(cfg, self.console)
        cluster.connect(cfg.cluster, logging_level=driver_log_level(cfg.log.verbose))
        return art

    # ------------------------------------------------------------------------------------------------
    # Aligned runs, evaluations
    # ------------------------------------------------------------------------------------------------

    def align_all(self, runs: dict[str, tuple[Config, Path]], art: artifacts.Artifacts) -> dict[str, Any]:
        """Run (or reuse) every alignment {name: (config, run dir)}; returns their done.json records."""
        done = {name: _read_json(d / "done.json") for name, (_, d) in runs.items()}
        todo = {name: run for name, run in runs.items() if done[name] is None}
        for _, run_dir in todo.values():
            if run_dir.exists():
                shutil.rmtree(run_dir)
        if todo:
            self.console.print(f"aligning {len(todo)} run(s) ({self.cfg.experiment.trainer} trainer): "
                               f"{', '.join(todo)}")
        if self.cfg.experiment.trainer == "local":
            statuses = dict(zip(todo, align_jobs([(cfg, d) for cfg, d in todo.values()]), strict=True))
        else:
            statuses = {name: self._align_with_driver(cfg, d) for name, (cfg, d) in todo.items()}
        for name, (cfg, run_dir) in todo.items():
            status, wall = statuses[name]
            if status != 0 or not (run_dir / "policy.pt").is_file():
                raise ExperimentError(f"the {cfg.objective.name} run in {run_dir} ended with status {status}; see "
                                      "its metrics.jsonl, fix the cause and rerun the experiment (finished runs are "
                                      "reused)")
            records = list(read_metrics(run_dir / "metrics.jsonl"))
            done[name] = {"wall_s": wall, "objective": cfg.objective.name, "seed": cfg.seed,
                          "steps": cfg.schedule.total_steps,
                          "cost": alignment_cost(cfg, records, self._offline_pairs(cfg, art))}
            _write_json(run_dir / "done.json", done[name])
        return done

    def _align_with_driver(self, cfg: Config, run_dir: Path) -> tuple[int, float]:
        """One run through the distributed Driver in this process (it closes its actors); (exit status, wall
        seconds)."""
        from sopo_ray.distributed.driver import Driver

        self.console.rule(f"{cfg.model.kind} · {cfg.objective.name} · seed {cfg.seed} · {run_dir}")
        start = time.time()
        status = Driver(cfg, run_dir, console=self.console).run()
        return status, time.time() - start

    @staticmethod
    def _offline_pairs(cfg: Config, art: artifacts.Artifacts) -> int:
        """How many pairs are sampled before an offline_dpo run (0 for the other methods)."""
        from sopo_ray.distributed.group import caption_table

        if cfg.objective.name != "offline_dpo":
            return 0
        return min(cfg.objective.offline_pairs, len(caption_table(art.train.motion_ids, art.train.captions)))

    def evaluate(self, cfg: Config, named: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Run evaluation jobs {name: job} (each cached in job['cache']) two at a time; returns {name: table}."""
        paths = model_paths(cfg)
        todo = {n: j for n, j in named.items() if _read_json(Path(j["cache"])) is None}
        if todo:
            self.console.print(f"evaluating {len(todo)} model/split pair(s)")
            tables = run_jobs(cfg, [{**paths, **{k: v for k, v in j.items() if k != "cache"}} for j in todo.values()])
            for job, table in zip(todo.values(), tables, strict=True):
                _write_json(Path(job["cache"]), table)
        return {n: _read_json(Path(j["cache"])) for n, j in named.items()}

    def curve(self, cfg: Config, art: artifacts.Artifacts, run_dir: Path, base_point: dict[str, Any]
              ) -> list[dict[str, Any]]:
        """Oracle accuracy, reward and R@1 of the run's kept checkpoints on the test split (step 0: the base)."""
        from sopo_ray.experiments.jobs import kept_checkpoints

        if cfg.experiment.curve_points == 0:
            return []
        jobs = {str(s): {"kind": "curve", "split": "test", "checkpoint": str(p.resolve()),
                         "base": str(art.base_path.resolve()), "cache": str(run_dir / "curve" / f"step_{s:08d}.json")}
                for s, p in kept_checkpoints(run_dir)}
        tables = self.evaluate(cfg, jobs)
        return [{"step": 0, **base_point}] + [{"step": int(s), **t} for s, t in tables.items()]

    # ------------------------------------------------------------------------------------------------
    # The comparison and the ablations
    # ------------------------------------------------------------------------------------------------

    def compare(self) -> dict[str, Any]:
        """The main tables: every base x every method x every training seed, on every held-out split."""
        e = self.cfg.experiment
        bases: dict[str, Any] = self.results.setdefault("bases", {})
        for kind in e.bases:
            cfg = base_config(self.cfg, kind)
            art = self.prepare(cfg)
            runs = {f"{m}/seed-{s}": (run_config(cfg, m, self.out / kind / m / f"seed-{s}", seed=s),
                                      self.out / kind / m / f"seed-{s}") for m in e.methods for s in e.seeds}
            done = self.align_all(runs, art)
            splits = eval_splits(cfg.data)
            jobs: dict[str, dict[str, Any]] = {}
            for split in splits:
                jobs[f"{split}/real"] = {"kind": "real", "split": split,
                                         "cache": str(self.out / kind / f"real_eval_{split}.json")}
                jobs[f"{split}/base"] = {"kind": "full", "split": split, "checkpoint": str(art.base_path.resolve()),
                                         "cache": str(self.out / kind / f"base_eval_{split}.json")}
                for name, (_, d) in runs.items():
                    jobs[f"{split}/{name}"] = {"kind": "full", "split": split,
                                               "checkpoint": str((d / "policy.pt").resolve()),
                                               "cache": str(d / f"eval_{split}.json")}
                if cfg.evaluator.paired_oracle and cfg.data.source == "synthetic":
                    models = {"base": art.base_path} | {name: d / "policy.pt" for name, (_, d) in runs.items()}
                    for name, path in models.items():
                        cache = (self.out / kind / f"base_oracle_all_{split}.json" if name == "base"
                                 else path.parent / f"oracle_all_{split}.json")
                        jobs[f"{split}/{name}/oracle-all"] = {"kind": "oracle_all", "split": split,
                                                              "checkpoint": str(path.resolve()), "cache": str(cache)}
            tables = self.evaluate(cfg, jobs)
            for name in [n for n in tables if n.endswith("/oracle-all")]:   # one more column of the model's row
                tables[name.removesuffix("/oracle-all")].update(tables.pop(name))
            entry: dict[str, Any] = {"pretrain": pretrain_cost(cfg, art.base_path, art.base_payload),
                                     "seeds": list(e.seeds), "runs": done, "splits": {}}
            for split in splits:
                methods = {m: {"seeds": {str(s): tables[f"{split}/{m}/seed-{s}"] for s in e.seeds}} for m in e.methods}
                for row in methods.values():
                    row["mean"] = over_seeds(list(row["seeds"].values()))
                    row["vs_base"] = delta_over_seeds(list(row["seeds"].values()), tables[f"{split}/base"])
                result = {"real": tables[f"{split}/real"], "base": tables[f"{split}/base"], "methods": methods}
                if "sopo" in methods:
                    others = {"base": result["base"]} | {m: r["mean"] for m, r in methods.items() if m != "sopo"}
                    result["verdict"] = {name: verdict(methods["sopo"]["mean"], table, result["real"])
                                         for name, table in others.items()}
                    if len(e.seeds) >= 2:
                        result["sopo_minus"] = {
                            m: paired_delta_over_seeds([methods["sopo"]["seeds"][str(x)] for x in e.seeds],
                                                       [r["seeds"][str(x)] for x in e.seeds])
                            for m, r in methods.items() if m != "sopo"}
                entry["splits"][split] = result
            base_point = self.evaluate(cfg, {"base": {"kind": "curve", "split": "test",
                                                      "checkpoint": str(art.base_path.resolve()),
                                                      "cache": str(self.out / kind / "base_curve.json")}})["base"]
            entry["curves"] = {m: self.curve(runs[f"{m}/seed-{e.seeds[0]}"][0], art,
                                             runs[f"{m}/seed-{e.seeds[0]}"][1], base_point) for m in e.methods}
            entry["dirs"] = {m: str(runs[f"{m}/seed-{e.seeds[0]}"][1]) for m in e.methods}
            bases[kind] = entry
            self.save()
        return self.results

    def ablate(self) -> dict[str, Any]:
        """SoPo with one key changed at a time (experiment.ablations), on experiment.ablation_base, first seed;
        every run first, then all evaluations on the in-distribution test split (two at a time)."""
        e = self.cfg.experiment
        cfg = base_config(self.cfg, e.ablation_base)
        extra = [f"schedule.total_steps={e.ablation_steps or cfg.schedule.total_steps}", "experiment.curve_points=1"]
        if e.ablation_replications:
            extra.append(f"evaluator.replications={e.ablation_replications}")
        cfg = with_overrides(cfg, extra)
        art = self.prepare(cfg)
        settings = {"default": []} | {f"{key}={value}": [f"{key}={value}"]
                                      for key, values in e.ablations.items() for value in values}
        rows: dict[str, Any] = {}
        self.results["ablations"] = {"base": e.ablation_base, "steps": cfg.schedule.total_steps,
                                     "replications": cfg.evaluator.replications, "seed": e.seeds[0],
                                     "defaults": {key: _get(cfg, key) for key in e.ablations}, "rows": rows}
        dirs = {name: self.out / "ablations" / name for name in settings}
        runs = {name: (run_config(cfg, "sopo", dirs[name], overrides, seed=e.seeds[0]), dirs[name])
                for name, overrides in settings.items()}
        done = self.align_all(runs, art)
        for name, overrides in settings.items():
            rows[name] = {"run": done[name], "overrides": overrides,
                          "below_tau": _step_mean(dirs[name], "loss/frac_below_tau")}
        tables = self.evaluate(cfg, {name: {"kind": "full", "split": "test",
                                            "checkpoint": str((d / "policy.pt").resolve()),
                                            "cache": str(d / "eval_test.json")} for name, d in dirs.items()})
        for name, table in tables.items():
            rows[name]["eval"] = table
        self.save()
        return self.results


def _get(cfg: Config, key: str) -> Any:
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _step_mean(run_dir: Path, key: str) -> float | None:
    """Mean of `key` over a run's learner-step records in metrics.jsonl (None if never logged)."""
    values = [r[key] for r in read_metrics(run_dir / "metrics.jsonl") if r.get("event") == "step"
              and isinstance(r.get(key), int | float)]
    return sum(values) / len(values) if values else None


def default_out(cfg: Config) -> Path:
    """runs/experiment-<name>: where `sopo experiment` writes when --out is not given."""
    return Path("runs") / f"experiment-{cfg.name}"
