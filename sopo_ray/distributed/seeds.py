"""Seeds derived from the run seed, so every random draw of a run can be replayed from its name.

Nothing in the trainer carries an RNG state from step to step: each draw takes a fresh generator seeded by a
stable hash of (run seed, purpose, indices). Rollout noise for sample k of caption c under policy version v is
`sample_seeds(run_seed, c, K, v)[k]`; the learner's timesteps, diffusion noise and dropout at step s on rank r are
`derive_seed(run_seed, "learner", s, r)`. Resuming a run therefore needs only the counters (step, version,
caption-stream position), and two runs with one seed draw the same numbers whatever the timing.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np

SEED_BITS = 63


def derive_seed(run_seed: int, *parts: str | int) -> int:
    """A 63-bit seed from the run seed and any number of labels/indices (stable across processes and hosts)."""
    text = "\x1f".join(str(p) for p in (int(run_seed), *parts))
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << SEED_BITS) - 1)


def sample_seeds(run_seed: int, caption_id: str, k: int, policy_version: int) -> list[int]:
    """Noise seeds of the K samples of one group: one per (run seed, caption id, sample index, policy version)."""
    return [derive_seed(run_seed, "rollout", caption_id, i, int(policy_version)) for i in range(k)]


@functools.lru_cache(maxsize=16)
def caption_order(run_seed: int, num_captions: int, epoch: int) -> np.ndarray:
    """The permutation of caption indices the caption stream visits in `epoch` ([num_captions] int64, read-only)."""
    rng = np.random.default_rng(derive_seed(run_seed, "captions", epoch))
    order = rng.permutation(num_captions).astype(np.int64)
    order.flags.writeable = False
    return order


def stream_captions(run_seed: int, num_captions: int, start: int, size: int) -> list[int]:
    """Caption indices at positions [start, start + size) of the caption stream: epoch p // num_captions of
    `caption_order`, entry p % num_captions."""
    n = num_captions
    return [int(caption_order(run_seed, n, p // n)[p % n]) for p in range(start, start + size)]
