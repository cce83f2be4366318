"""HumanML3D motion representation: the 22-joint skeleton, the 263-dim features, and a stick-figure renderer.

`features_to_joints` and `joints_to_features` convert between the two formats every module exchanges
(un-normalised features [T, 263], joints [T, 22, 3] in metres, y up); `Normalizer` handles mean/std.
The renderer lives in `sopo_ray.motion.render` (imported on demand, it pulls in matplotlib).
"""

from sopo_ray.motion.features import (
    FEATURE_DIM,
    FEATURE_SLICES,
    Normalizer,
    features_to_joints,
    features_to_local_rotations,
    group_mean_std,
    joints_to_features,
    load_mean_std,
    recover_from_rot,
)
from sopo_ray.motion.skeleton import (
    BONE_LENGTHS,
    JOINT_NAMES,
    KINEMATIC_CHAIN,
    OFFSETS,
    PARENTS,
    RAW_OFFSETS,
    forward_kinematics,
)

__all__ = [
    "BONE_LENGTHS", "FEATURE_DIM", "FEATURE_SLICES", "JOINT_NAMES", "KINEMATIC_CHAIN", "OFFSETS", "PARENTS",
    "RAW_OFFSETS", "Normalizer", "features_to_joints", "features_to_local_rotations", "forward_kinematics",
    "group_mean_std", "joints_to_features", "load_mean_std", "recover_from_rot",
]
