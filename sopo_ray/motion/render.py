"""Stick-figure pictures of motions: an animated GIF and a PNG filmstrip, several motions side by side.

Each motion is drawn in its own 3D panel that follows the root, over a floor grid fixed in the world (so
walking shows as the floor sliding by) with the root's ground trajectory. Left limbs are blue, right limbs
red, the spine black. Joints are [T, J, 3], y up (22-joint HumanML3D or 21-joint KIT-ML skeleton).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure, SubFigure  # noqa: E402
from PIL import Image  # noqa: E402

from sopo_ray.errors import DataError  # noqa: E402
from sopo_ray.motion.skeleton import KINEMATIC_CHAIN, KIT_KINEMATIC_CHAIN  # noqa: E402

# Chain order in both skeletons: right leg, left leg, spine, right arm, left arm.
CHAIN_COLORS = ("#d62728", "#1f77b4", "#222222", "#ff7f0e", "#17becf")
CHAIN_WIDTHS = (3.0, 3.0, 3.5, 2.5, 2.5)
VIEW = {"elev": 18.0, "azim": 45.0}
ZOOM = 1.3
FLOOR_RADIUS = 0.9
CAPTION_WIDTH = 38


def _chains(num_joints: int) -> tuple[tuple[int, ...], ...]:
    return KINEMATIC_CHAIN if num_joints == 22 else KIT_KINEMATIC_CHAIN


def _to_plot(points: np.ndarray) -> np.ndarray:
    """World (x, y up, z) -> plot (-x, z, y): a proper rotation, so left and right are not mirrored."""
    return np.stack([-points[..., 0], points[..., 2], points[..., 1]], -1)


def _check(joints_list: Sequence[np.ndarray], captions: Sequence[str]) -> list[np.ndarray]:
    if not joints_list:
        raise DataError("nothing to render: pass at least one motion")
    if len(captions) != len(joints_list):
        raise DataError(f"got {len(joints_list)} motions but {len(captions)} captions; pass one caption per motion")
    checked = []
    for i, joints in enumerate(joints_list):
        joints = np.asarray(joints, dtype=np.float64)
        if joints.ndim != 3 or joints.shape[1:] not in ((22, 3), (21, 3)) or len(joints) == 0:
            raise DataError(f"motion {i}: expected joints [T, 22 or 21, 3], got {tuple(joints.shape)}")
        if not np.isfinite(joints).all():
            raise DataError(f"motion {i} contains NaN or infinite positions; it cannot be drawn")
        checked.append(joints)
    return checked


class _Panel:
    """One motion in one 3D axes, centred on the root's xz at the frame being drawn."""

    def __init__(self, container: Figure | SubFigure, column: int, columns: int, joints: np.ndarray,
                 title: str, title_size: float, title_y: float = 0.98) -> None:
        self.joints = joints
        extent = np.percentile(joints.max(1) - joints.min(1), 95, axis=0).max()
        self.unit = max(extent / 1.7, 1e-3)  # ~1 for metres, ~1000 for millimetres
        self.radius = FLOOR_RADIUS * self.unit  # limbs may reach past the floor patch; nothing clips them
        self.floor = joints[..., 1].min()
        self.height = joints[..., 1].max() - self.floor + 0.1 * self.unit
        # The 3D box's empty top half would leave a gap under the title: let the axes reach above the panel.
        self.ax = container.add_axes((column / columns, -0.12, 1 / columns, 1.32), projection="3d")
        self.ax.view_init(**VIEW)
        self.ax.set_box_aspect((2 * self.radius, 2 * self.radius, self.height), zoom=ZOOM)
        self.ax.set_xlim(-self.radius, self.radius)
        self.ax.set_ylim(-self.radius, self.radius)
        self.ax.set_zlim(0, self.height)
        self.ax.set_axis_off()
        container.text((column + 0.5) / columns, title_y, title, ha="center", va="top", fontsize=title_size)
        (self.grid,) = self.ax.plot([], [], [], color="#c8c8c8", lw=0.8)
        (self.path,) = self.ax.plot([], [], [], color="#9467bd", lw=1.2, alpha=0.5)
        (self.walked,) = self.ax.plot([], [], [], color="#9467bd", lw=2.0)
        self.bones = [self.ax.plot([], [], [], color=c, lw=w, solid_capstyle="round")[0]
                      for c, w in zip(CHAIN_COLORS, CHAIN_WIDTHS, strict=True)]
        self.chains = _chains(joints.shape[1])
        self.artists = [self.grid, self.path, self.walked, *self.bones]

    def _grid_lines(self, centre: np.ndarray) -> np.ndarray:
        """Floor grid fixed in the world, in the centred frame, as NaN-separated segments [n, 3]."""
        step = 0.5 * self.unit
        segments = []
        for axis in (0, 1):
            first = np.ceil((centre[axis] - self.radius) / step) * step
            for value in np.arange(first, centre[axis] + self.radius, step) - centre[axis]:
                line = np.full((3, 3), np.nan)
                line[:2, axis] = value
                line[:2, 1 - axis] = (-self.radius, self.radius)
                line[:2, 2] = 0.0
                segments.append(line)
        return np.concatenate(segments) if segments else np.full((1, 3), np.nan)

    def _clip(self, points: np.ndarray) -> np.ndarray:
        inside = (np.abs(points[:, :2]) <= self.radius).all(1)
        return np.where(inside[:, None], points, np.nan)

    def draw(self, frame: int) -> None:
        """Show frame `frame` (clamped to the motion's length)."""
        frame = min(frame, len(self.joints) - 1)
        plot = _to_plot(self.joints - np.array([0.0, self.floor, 0.0]))
        centre = plot[frame, 0].copy()
        centre[2] = 0.0
        grid = self._grid_lines(centre)
        self.grid.set_data_3d(grid[:, 0], grid[:, 1], grid[:, 2])
        ground = plot[:, 0] * np.array([1.0, 1.0, 0.0]) - centre
        for artist, part in ((self.path, ground), (self.walked, ground[: frame + 1])):
            part = self._clip(part)
            artist.set_data_3d(part[:, 0], part[:, 1], part[:, 2])
        pose = plot[frame] - centre
        for artist, chain in zip(self.bones, self.chains, strict=True):
            points = pose[list(chain)]
            artist.set_data_3d(points[:, 0], points[:, 1], points[:, 2])


def _wrap(caption: str) -> str:
    return "\n".join(textwrap.wrap(caption, CAPTION_WIDTH)) if caption else ""


def _shared_palette(images: list[Image.Image]) -> Image.Image:
    """One GIF palette for all frames, built from the first, middle and last frame side by side."""
    picks = [images[0], images[len(images) // 2], images[-1]]
    sheet = Image.new("RGB", (sum(im.width for im in picks), picks[0].height), "white")
    for k, im in enumerate(picks):
        sheet.paste(im, (k * im.width, 0))
    return sheet.quantize(colors=128, method=Image.Quantize.MEDIANCUT)


def render_gif(joints_list: Sequence[np.ndarray], captions: Sequence[str], path: str | Path, fps: int = 20,
               stride: int = 1) -> Path:
    """Animated GIF of motions [T, J, 3] side by side, one panel each with its wrapped caption as title.

    Draws every `stride`-th frame and plays them at `fps / stride` so the motion keeps its real speed;
    shorter motions hold their last pose. Returns the written path.
    """
    if fps <= 0 or stride <= 0:
        raise DataError(f"fps and stride must be positive, got fps={fps}, stride={stride}")
    motions = _check(joints_list, captions)
    fig = plt.figure(figsize=(3.2 * len(motions), 3.6), dpi=80)
    try:
        panels = [_Panel(fig, i, len(motions), m, _wrap(c), 9)
                  for i, (m, c) in enumerate(zip(motions, captions, strict=True))]
        clock = fig.text(0.01, 0.01, "", fontsize=8, color="#555555", animated=True)
        # Blitting: the titles and the 3D projection are drawn once; each frame only redraws the lines.
        fig.canvas.draw()
        background = fig.canvas.copy_from_bbox(fig.bbox)
        images = []
        for frame in range(0, max(len(m) for m in motions), stride):
            fig.canvas.restore_region(background)
            for panel in panels:
                panel.draw(frame)
                for artist in panel.artists:
                    panel.ax.draw_artist(artist)
            clock.set_text(f"{frame / fps:.2f} s")
            fig.draw_artist(clock)
            images.append(Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3]))
    finally:
        plt.close(fig)
    palette = _shared_palette(images)
    frames = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in images]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=round(1000 * stride / fps), loop=0)
    return path


def render_filmstrip(joints_list: Sequence[np.ndarray], captions: Sequence[str], path: str | Path,
                     frames: int = 8, fps: int = 20) -> Path:
    """PNG with one row per motion: `frames` evenly spaced poses (first and last included), caption above.

    Returns the written path.
    """
    if frames <= 0:
        raise DataError(f"frames must be positive, got {frames}")
    motions = _check(joints_list, captions)
    fig = plt.figure(figsize=(2.0 * frames, 2.7 * len(motions)), dpi=110)
    try:
        rows = fig.subfigures(len(motions), 1, squeeze=False)[:, 0]
        for row, motion, caption in zip(rows, motions, captions, strict=True):
            row.suptitle(textwrap.shorten(caption, 160) if caption else "", fontsize=10, y=0.99)
            for col, frame in enumerate(np.linspace(0, len(motion) - 1, frames).round().astype(int)):
                _Panel(row, col, frames, motion, f"{frame / fps:.2f} s", 8, title_y=0.86).draw(int(frame))
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
