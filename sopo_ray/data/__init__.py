"""Text-to-motion datasets: the embedded synthetic one (with a caption oracle) and real HumanML3D / KIT-ML.

    dataset.py     `MotionDataset` (one split in memory) and its Parquet form: the leaf both loaders produce
    humanml3d.py   a real HumanML3D / KIT-ML folder in the released layout
    synthetic/     the procedural motion synthesiser, its caption grammar and the clause-by-clause oracle

`load_dataset(data_cfg, split)` is the one entry point the rest of sopo_ray uses; `oracle_score(motion, params)`
checks a synthetic motion (or a generated one) against the structured parameters of its caption.
"""

from __future__ import annotations

from sopo_ray.config import DataConfig
from sopo_ray.data.dataset import REAL_SPLITS, SPLITS, MotionDataset, eval_splits
from sopo_ray.data.synthetic.oracle import OracleResult, oracle_score
from sopo_ray.errors import DataError

__all__ = ["SPLITS", "MotionDataset", "OracleResult", "eval_splits", "load_dataset", "oracle_score"]


def load_dataset(data_cfg: DataConfig, split: str) -> MotionDataset:
    """One split of the dataset `data_cfg` describes: "train", "val", "test" (synthetic, humanml3d, kitml) or
    "compositional" (synthetic only)."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if data_cfg.source == "synthetic":
        from sopo_ray.data.synthetic.build import load_synthetic

        return load_synthetic(data_cfg, split)
    if split not in REAL_SPLITS:
        raise DataError(f"the {split!r} split exists only for the embedded synthetic dataset; use one of "
                        f"{', '.join(REAL_SPLITS)} with data.source {data_cfg.source}")
    from sopo_ray.data.humanml3d import load_humanml3d

    return load_humanml3d(data_cfg, split)
