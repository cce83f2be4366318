"""Procedural bodies: joint-angle curves -> bone rotations -> HumanML3D local rotations -> joints by FK.

A motion is animated as named joint-angle channels (degrees, one value per frame: hip flexion, knee flexion,
shoulder abduction, ...) plus a heading (yaw), an optional flight height and a "planted" flag. `pose_joints`
turns them into a rotation for every bone of the 22-joint skeleton, expresses those as the per-chain local
rotations that `sopo_ray.motion.forward_kinematics` expects (every chain restarts from the root rotation), runs
FK, and then places the root in the world:

- height: the lowest joint touches the floor (y = 0), plus the flight height of jumps;
- horizontal: while planted, the lowest foot joint keeps its world position from one frame to the next (the
  body rolls over the stance foot, so walking speed comes out of the stride and no foot slides); while
  airborne, the root moves with the channel `drift` instead.

Angle conventions (body frame: +z forward, +x the body's left, +y up): flexion swings a limb forward, abduction
swings it outward, positive knee and elbow values bend them, positive ankle values point the toes down, positive
spine bend leans forward, positive yaw and twist turn to the left.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sopo_ray.motion.quaternion import qinv, qmul, qrot, quat_from_axis_angle
from sopo_ray.motion.skeleton import BONE_LENGTHS, KINEMATIC_CHAIN, NUM_JOINTS, OFFSETS, forward_kinematics

FPS = 20.0
"""Frames per second of every synthetic motion (HumanML3D's rate)."""

SIDES = ("l", "r")
LIMB_DOFS = ("hip_flex", "hip_abd", "hip_twist", "knee", "ankle", "sh_flex", "sh_abd", "sh_twist", "elbow", "clav")
CHANNELS: tuple[str, ...] = (
    "pelvis_pitch", "pelvis_roll", "pelvis_yaw", "spine_bend", "spine_side", "spine_twist", "neck_bend",
    "neck_turn", *(f"{s}_{d}" for s in SIDES for d in LIMB_DOFS),
)

# Standing rest values (degrees): arms hang slightly away from the body with soft elbows, knees almost straight.
NEUTRAL: dict[str, float] = {
    "l_sh_abd": 9.0, "r_sh_abd": 9.0, "l_elbow": 14.0, "r_elbow": 14.0, "l_sh_flex": 4.0, "r_sh_flex": 4.0,
    "l_knee": 4.0, "r_knee": 4.0, "l_hip_flex": 2.0, "r_hip_flex": 2.0, "l_hip_abd": 3.0, "r_hip_abd": 3.0,
    "spine_bend": 3.0, "neck_bend": 4.0,
}

# Joints that can carry the body's weight on the floor: knees (kneeling), ankles and toes; and per foot.
SUPPORT_JOINTS = np.array([4, 5, 7, 8, 10, 11])
_FOOT_MASKS = np.array([[0, 0, 1, 0, 1, 0], [0, 0, 0, 1, 0, 1]], dtype=bool)

_X = np.array([1.0, 0.0, 0.0])
_Y = np.array([0.0, 1.0, 0.0])
_Z = np.array([0.0, 0.0, 1.0])


def _rot(axis: np.ndarray, degrees: np.ndarray | float) -> np.ndarray:
    return quat_from_axis_angle(axis, np.radians(np.asarray(degrees, dtype=np.float64)))


def _chain(*quats: np.ndarray) -> np.ndarray:
    """Product q1 * q2 * ... (the rightmost rotation is applied first)."""
    out = quats[0]
    for q in quats[1:]:
        out = qmul(out, q)
    return out


def _zxy(z: np.ndarray | float, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
    return _chain(_rot(_Z, z), _rot(_X, x), _rot(_Y, y))


# Fixed bone tilts that turn HumanML3D's raw offset directions into a natural standing skeleton (hips a little
# below the pelvis, an S-shaped spine, collar bones rising to shoulders at the side, head in front of the neck,
# feet pointing slightly down and out). Values follow the bone directions of real HumanML3D clips.
_REST: dict[int, np.ndarray] = {
    1: _rot(_Z, -38.0), 2: _rot(_Z, 38.0),
    3: _rot(_X, -20.0), 6: _rot(_X, 20.0), 9: _rot(_X, 55.0), 12: _rot(_X, 12.0), 15: _rot(_X, -58.0),
    13: _rot(_Z, 72.0), 14: _rot(_Z, -72.0),
    16: _chain(_rot(_Y, -18.0), _rot(_Z, 88.0)), 17: _chain(_rot(_Y, 18.0), _rot(_Z, -88.0)),
    10: _chain(_rot(_Y, 14.0), _rot(_X, 20.0)), 11: _chain(_rot(_Y, -14.0), _rot(_X, 20.0)),
}


@dataclass(frozen=True)
class Style:
    """Per-motion variety: how big, how fast and how loose one performer moves (all near 1)."""

    amplitude: float = 1.0
    """Scales joint excursions of actions."""
    tempo: float = 1.0
    """Scales step and gesture frequencies."""
    arm_swing: float = 1.0
    """Scales the arm swing of locomotion."""
    lean: float = 0.0
    """Extra forward lean of the spine, degrees."""

    @staticmethod
    def sample(rng: np.random.Generator) -> Style:
        """A random performer."""
        return Style(amplitude=float(rng.uniform(0.9, 1.1)), tempo=float(rng.uniform(0.93, 1.07)),
                     arm_swing=float(rng.uniform(0.7, 1.3)), lean=float(rng.uniform(-2.0, 5.0)))


@dataclass
class Track:
    """Animation curves of one motion clip with `n` frames.

    angles: channel -> [n] degrees (missing channels are at `NEUTRAL`); yaw: [n] heading in degrees (+ = left);
    lift: [n] extra root height in metres (flight of a jump); plant: [n] 1 where the lowest foot joint stays
    fixed, 0 in flight; drift: [n, 2] root velocity (m/frame, body frame x = left, z = forward) used in flight;
    stance: [n] which foot carries the weight (0 left, 1 right, -1: whichever support joint is lowest).
    """

    n: int
    angles: dict[str, np.ndarray] = field(default_factory=dict)
    yaw: np.ndarray = field(default=None)  # type: ignore[assignment]
    lift: np.ndarray = field(default=None)  # type: ignore[assignment]
    plant: np.ndarray = field(default=None)  # type: ignore[assignment]
    drift: np.ndarray = field(default=None)  # type: ignore[assignment]
    stance: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.yaw = np.zeros(self.n) if self.yaw is None else self.yaw
        self.lift = np.zeros(self.n) if self.lift is None else self.lift
        self.plant = np.ones(self.n) if self.plant is None else self.plant
        self.drift = np.zeros((self.n, 2)) if self.drift is None else self.drift
        self.stance = np.full(self.n, -1) if self.stance is None else self.stance

    def __getitem__(self, name: str) -> np.ndarray:
        """The curve of channel `name`, created at its neutral value on first access (edit it in place)."""
        if name not in self.angles:
            if name not in CHANNELS:
                raise KeyError(f"unknown pose channel {name!r}")
            self.angles[name] = np.full(self.n, NEUTRAL.get(name, 0.0))
        return self.angles[name]

    def __setitem__(self, name: str, values: np.ndarray) -> None:
        if name not in CHANNELS:
            raise KeyError(f"unknown pose channel {name!r}")
        self.angles[name] = np.broadcast_to(np.asarray(values, dtype=np.float64), (self.n,)).copy()

    @staticmethod
    def concat(tracks: list[Track]) -> Track:
        """Play tracks one after another; each track's heading continues from where the previous one ended."""
        names = sorted({name for t in tracks for name in t.angles})
        out = Track(sum(t.n for t in tracks))
        for name in names:
            out.angles[name] = np.concatenate([t[name] for t in tracks])
        heading, yaws = 0.0, []
        for t in tracks:
            yaws.append(t.yaw + heading)
            heading += float(t.yaw[-1])
        out.yaw = np.concatenate(yaws)
        out.lift = np.concatenate([t.lift for t in tracks])
        out.plant = np.concatenate([t.plant for t in tracks])
        out.drift = np.concatenate([t.drift for t in tracks])
        out.stance = np.concatenate([t.stance for t in tracks])
        return out


def _pelvis_tilt(track: Track) -> np.ndarray:
    """Rotation [n, 4] of the pelvis relative to the heading (its wobble, lean and roll)."""
    return _chain(_rot(_Y, track["pelvis_yaw"]), _rot(_X, track["pelvis_pitch"]), _rot(_Z, -track["pelvis_roll"]))


def leg_ik(track: Track, side: str, ankle: np.ndarray) -> None:
    """Set hip flexion/abduction and knee flexion of leg `side` ("l"/"r") so that its ankle reaches `ankle`
    [n, 3], given relative to the root in the heading frame (x left, y up, z forward). Out-of-reach targets
    straighten the leg towards them."""
    mirror = 1.0 if side == "l" else -1.0
    hip_joint, knee_joint, ankle_joint = (1, 4, 7) if side == "l" else (2, 5, 8)
    tilt = _pelvis_tilt(track)
    hip = qrot(tilt, np.broadcast_to(qrot(_REST[hip_joint], OFFSETS[hip_joint]), (track.n, 3)))
    d = qrot(qinv(tilt), np.asarray(ankle, dtype=np.float64) - hip)
    x, y, z = mirror * d[:, 0], d[:, 1], d[:, 2]
    thigh, shin = BONE_LENGTHS[knee_joint], BONE_LENGTHS[ankle_joint]
    reach = np.clip(np.linalg.norm(d, axis=-1), abs(thigh - shin) + 1e-3, (thigh + shin) * 0.9999)
    knee = np.arccos(np.clip((reach**2 - thigh**2 - shin**2) / (2 * thigh * shin), -1.0, 1.0))
    down = np.sqrt(x**2 + y**2)
    flex = np.arctan2(z, down) + np.arctan2(shin * np.sin(knee), thigh + shin * np.cos(knee))
    track[f"{side}_hip_abd"] = np.degrees(np.arctan2(x, -y))
    track[f"{side}_hip_flex"] = np.degrees(flex)
    track[f"{side}_knee"] = np.degrees(knee)
    track[f"{side}_hip_twist"] = 0.0


def flat_foot(track: Track, side: str) -> np.ndarray:
    """Ankle angle [n] that keeps the foot of leg `side` level with the floor (undoes the thigh and shin tilt)."""
    return track[f"{side}_hip_flex"] - track[f"{side}_knee"] + track["pelvis_pitch"]


def bone_rotations(track: Track) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """(root rotation [n, 4], bone j -> world rotation [n, 4] of the bone ending at joint j, for j = 1..21)."""
    a = track.__getitem__
    pelvis = qmul(_rot(_Y, track.yaw), _pelvis_tilt(track))
    spine_step = _zxy(-a("spine_side") / 3.0, a("spine_bend") / 3.0, a("spine_twist") / 3.0)
    s1 = qmul(pelvis, spine_step)
    s2 = qmul(s1, spine_step)
    torso = qmul(s2, spine_step)
    head = _chain(torso, _rot(_Y, a("neck_turn")), _rot(_X, a("neck_bend")))
    bones = {1: qmul(pelvis, _REST[1]), 2: qmul(pelvis, _REST[2]), 3: qmul(s1, _REST[3]), 6: qmul(s2, _REST[6]),
             9: qmul(torso, _REST[9]), 12: qmul(head, _REST[12]), 15: qmul(head, _REST[15]),
             13: qmul(torso, _REST[13]), 14: qmul(torso, _REST[14])}
    for side, mirror, (knee, ankle, foot, shoulder, elbow, wrist) in (
        ("l", 1.0, (4, 7, 10, 16, 18, 20)), ("r", -1.0, (5, 8, 11, 17, 19, 21)),
    ):
        def ch(dof: str, side: str = side) -> np.ndarray:
            return a(f"{side}_{dof}")

        thigh = qmul(pelvis, _zxy(mirror * ch("hip_abd"), -ch("hip_flex"), mirror * ch("hip_twist")))
        shin = qmul(thigh, _rot(_X, ch("knee")))
        bones[knee], bones[ankle] = thigh, shin
        bones[foot] = _chain(shin, _rot(_X, ch("ankle")), _REST[foot])
        bones[shoulder] = _chain(torso, _rot(_Z, mirror * ch("clav")), _REST[shoulder])
        upper = qmul(torso, _zxy(mirror * ch("sh_abd"), -ch("sh_flex"), mirror * ch("sh_twist")))
        bones[elbow] = upper
        bones[wrist] = qmul(upper, _rot(_X, -ch("elbow")))
    return pelvis, bones


def local_rotations(track: Track) -> np.ndarray:
    """HumanML3D per-chain local rotations [n, 22, 4] (wxyz) of the track, ready for `forward_kinematics`."""
    root, bones = bone_rotations(track)
    local = np.zeros((track.n, NUM_JOINTS, 4))
    local[:, 0] = root
    for chain in KINEMATIC_CHAIN:
        previous = root
        for joint in chain[1:]:
            local[:, joint] = qmul(qinv(previous), bones[joint])
            previous = bones[joint]
    return local


def pose_joints(track: Track) -> np.ndarray:
    """World joint positions [n, 22, 3] of the track: FK of its rotations, root placed on the floor and moved
    by the planted foot (or by `drift` in flight)."""
    body = forward_kinematics(local_rotations(track), np.zeros((track.n, 3)))
    height = -body[:, :, 1].min(1) + track.lift
    support = body[:, SUPPORT_JOINTS]
    heights = support[:, :, 1].copy()
    chosen = track.stance >= 0
    heights[chosen] = np.where(_FOOT_MASKS[track.stance[chosen]], heights[chosen], np.inf)
    stance = heights.argmin(1)[:-1]
    rows = np.arange(track.n - 1)
    planted_step = -(support[rows + 1, stance] - support[rows, stance])[:, [0, 2]]
    yaw = np.radians(track.yaw[1:])
    dx, dz = track.drift[1:, 0], track.drift[1:, 1]
    drift_step = np.stack([dx * np.cos(yaw) + dz * np.sin(yaw), -dx * np.sin(yaw) + dz * np.cos(yaw)], -1)
    plant = (track.plant[1:] * track.plant[:-1])[:, None]
    steps = plant * planted_step + (1.0 - plant) * drift_step
    xz = np.concatenate([np.zeros((1, 2)), np.cumsum(steps, 0)])
    root = np.stack([xz[:, 0], height, xz[:, 1]], -1)
    return body + root[:, None, :]
