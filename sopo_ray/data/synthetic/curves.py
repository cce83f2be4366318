"""Time curves for procedural animation: smooth ramps, envelopes, repeated pulses, gait phases and noise.

All functions take a number of frames `n` (or a phase array) and return float64 arrays; times are given as
fractions of the clip in [0, 1], so an action keeps its shape whatever its length.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d


def unit_time(n: int) -> np.ndarray:
    """[n] times in [0, 1] (0 at the first frame, 1 at the last)."""
    return np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(n)


def smoothstep(x: np.ndarray) -> np.ndarray:
    """C1 ramp from 0 (x <= 0) to 1 (x >= 1)."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def ramp(n: int, start: float, end: float) -> np.ndarray:
    """[n] rising smoothly from 0 at fraction `start` to 1 at fraction `end`."""
    return smoothstep((unit_time(n) - start) / max(end - start, 1e-6))


def envelope(n: int, rise: float, fall: float, start: float = 0.0, end: float = 1.0) -> np.ndarray:
    """[n] 0 -> 1 over [start, start + rise], 1, then 1 -> 0 over [end - fall, end] (fractions of the clip)."""
    return ramp(n, start, start + rise) * (1.0 - ramp(n, end - fall, end))


def pulses(n: int, count: int, start: float = 0.1, end: float = 0.9, hold: float = 0.0, gap: float = 0.0) -> np.ndarray:
    """[n] `count` smooth 0 -> 1 -> 0 bumps evenly filling [start, end]. Of each bump's slot, `gap` is spent
    resting at 0 (half before, half after) and `hold` of the rest at the top."""
    t = unit_time(n)
    width = (end - start) / count
    out = np.zeros(n)
    for k in range(count):
        local = ((t - (start + k * width)) / width - gap / 2) / (1.0 - gap)
        edge = (1.0 - hold) / 2.0
        out = np.maximum(out, smoothstep(local / edge) * (1.0 - smoothstep((local - 1.0 + edge) / edge)))
    return out


def bump(phase: np.ndarray, centre: float, width: float) -> np.ndarray:
    """Periodic Gaussian bump of a cycle phase (in cycles) centred at `centre` with std `width`."""
    d = (phase - centre + 0.5) % 1.0 - 0.5
    return np.exp(-0.5 * (d / width) ** 2)


def phase(n: int, cycles_per_frame: float | np.ndarray, start: float = 0.0) -> np.ndarray:
    """[n] cycle phase advancing by `cycles_per_frame` each frame (a constant or a per-frame array)."""
    rate = np.broadcast_to(np.asarray(cycles_per_frame, dtype=np.float64), (n,))
    return start + np.concatenate([[0.0], np.cumsum(rate[:-1])])


def smooth_noise(rng: np.random.Generator, n: int, scale: float, sigma: float = 6.0) -> np.ndarray:
    """[n] slowly varying noise with standard deviation about `scale` (Gaussian-filtered white noise)."""
    white = rng.standard_normal(n + 4 * int(sigma))
    smooth = gaussian_filter1d(white, sigma)[2 * int(sigma): 2 * int(sigma) + n]
    # Filtering unit white noise with a Gaussian of std sigma leaves a std of (2 sqrt(pi) sigma)^(-1/2).
    return smooth * scale * np.sqrt(2.0 * np.sqrt(np.pi) * sigma)
