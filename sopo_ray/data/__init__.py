"""Text-to-motion datasets: the embedded synthetic one (with a caption oracle) and real HumanML3D / KIT-ML.

`load_dataset(data_cfg, split)` is the one entry point the rest of sopo_ray uses; `oracle_score(motion, params)`
checks a synthetic motion (or a generated one) against the structured parameters of its caption.
"""

from sopo_ray.data.oracle import OracleResult, oracle_score
from sopo_ray.data.store import SPLITS, MotionDataset, load_dataset

__all__ = ["SPLITS", "MotionDataset", "OracleResult", "load_dataset", "oracle_score"]
