"""Fitting a scorer model (the reward model, the evaluator) on the configured data and saving it: the harness both
trainers share, around the model's own training loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sopo_ray.tracking import MetricsWriter


def fit_and_save(cfg: Any, out: str | Path, kind: str, fit: Callable[[Any, Any, MetricsWriter], tuple[Any, dict]],
                 **extra: Any) -> Path:
    """Train a model on `cfg.data`'s train split (validating on val), logging to `<out stem>_metrics.jsonl` beside
    `out`, then save it atomically as a `kind` checkpoint with `arch`, final metrics, train seconds and `extra`
    (callables get the trained model, e.g. `vocab=lambda m: m.vocab`). Returns the checkpoint path.

    `fit(train, val, log) -> (model, final_metrics)` is the model's own training loop (reward or evaluator).
    """
    import torch

    from sopo_ray.checkpoint import save_checkpoint
    from sopo_ray.config import config_to_dict
    from sopo_ray.data import load_dataset

    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    out = Path(out)
    train, val = load_dataset(cfg.data, "train"), load_dataset(cfg.data, "val")
    metrics_path = out.with_name(f"{out.stem}_metrics.jsonl")
    metrics_path.unlink(missing_ok=True)
    start = time.time()
    with MetricsWriter(metrics_path) as log:
        model, result = fit(train, val, log)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    fields = {k: v(model) if callable(v) else v for k, v in extra.items()}
    return save_checkpoint(out, kind, state, config_to_dict(cfg), train.data_id, arch=model.arch, metrics=result,
                           train_seconds=round(time.time() - start, 1), **fields)
