"""`sopo render`: motion files (.npy, HumanML3D features or joints) -> stick-figure GIF and PNG filmstrip."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from sopo_ray.cli import check_number
from sopo_ray.errors import DataError
from sopo_ray.paths import check_output_file


def load_motion_joints(path: Path) -> np.ndarray:
    """Joints [T, J, 3] from a .npy holding features [T, 263|251] or joints [T, 22|21, 3].

    Trailing all-zero feature rows (padding past a motion's length) are dropped.
    """
    from sopo_ray.motion.features import features_to_joints

    if not path.is_file():
        raise DataError(f"motion file {path} not found; pass .npy files of features [T, 263] or joints [T, 22, 3]")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{path} is not a plain .npy array ({exc}); save motions with numpy.save") from exc
    if not isinstance(array, np.ndarray):
        raise DataError(f"{path} is an .npz archive, not one array; save each motion with numpy.save to a .npy")
    if array.dtype.kind not in "fiu" or not np.isfinite(array).all():
        raise DataError(f"{path} holds NaN/inf or non-numeric values; regenerate the motion (or drop its bad frames)")
    while array.ndim > 2 and array.shape[0] == 1 and array.shape[1:] not in ((22, 3), (21, 3)):
        array = array[0]
    if array.ndim in (2, 3) and len(array) == 0:
        raise DataError(f"{path} has no frames (shape {array.shape}); pass a motion of at least one frame")
    if array.ndim == 3 and array.shape[1:] in ((22, 3), (21, 3)):
        return array.astype(np.float64)
    if array.ndim == 2 and array.shape[1] in (263, 251):
        rows = np.flatnonzero(np.abs(array).sum(1) > 0)
        if len(rows) == 0:
            raise DataError(f"{path} holds only zeros; nothing to render")
        if rows[-1] == 0:
            raise DataError(f"{path} holds features of one frame, and features encode motion between frames; "
                            "pass at least 2 frames (or joints [T, 22, 3], which render from one frame)")
        return features_to_joints(array[: rows[-1] + 1].astype(np.float64))
    raise DataError(f"{path} has shape {array.shape}; expected features [T, 263] (or KIT [T, 251]) "
                    "or joints [T, 22, 3]; for a batch, save one motion per file")


def run(args: argparse.Namespace) -> int:
    """Render the files side by side: a GIF plus `<out>.png` filmstrip, or only the filmstrip for a .png."""
    from sopo_ray.motion.render import render_filmstrip, render_gif

    out = Path(args.out)
    if out.suffix.lower() not in (".gif", ".png"):
        raise DataError(f"--out must end with .gif (GIF + PNG filmstrip) or .png (filmstrip only), got {out}")
    check_number("--fps", args.fps, low=1, example="20")
    check_number("--stride", args.stride, low=1, example="1")
    check_number("--frames", args.frames, low=1, example="8")
    check_output_file(out, "--out")
    check_output_file(out.with_suffix(".png"), "--out")
    captions = list(args.captions or [])
    if captions and len(captions) != len(args.files):
        raise DataError(f"got {len(args.files)} files but {len(captions)} captions; pass one --caption per file")
    captions = captions or [Path(f).stem for f in args.files]
    motions = [load_motion_joints(Path(f)) for f in args.files]
    written = []
    if out.suffix.lower() == ".gif":
        written.append(render_gif(motions, captions, out, fps=args.fps, stride=args.stride))
    written.append(render_filmstrip(motions, captions, out.with_suffix(".png"), frames=args.frames, fps=args.fps))
    for path in written:
        print(f"wrote {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `sopo render`."""
    parser = subparsers.add_parser(
        "render", help="draw motions (.npy features or joints) as a stick-figure GIF and PNG filmstrip",
        description="Draw one or more motions side by side. Each FILE.npy holds HumanML3D features [T, 263] "
                    "(un-normalised) or joints [T, 22, 3] in metres, y up. Writes OUT.gif and OUT.png "
                    "(a filmstrip of evenly spaced frames), or only the filmstrip when OUT ends with .png.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE.npy", help="motion files, drawn left to right")
    parser.add_argument("--caption", dest="captions", action="extend", nargs="+", metavar="TEXT",
                        help="one caption per file, shown as its title (default: the file names)")
    parser.add_argument("--out", required=True, help="output .gif (plus a .png filmstrip beside it) or .png")
    parser.add_argument("--fps", type=int, default=20, help="frame rate of the motions (HumanML3D: 20)")
    parser.add_argument("--stride", type=int, default=1, help="draw every N-th frame in the GIF (smaller file)")
    parser.add_argument("--frames", type=int, default=8, help="number of poses in the filmstrip")
    parser.set_defaults(func=run)
