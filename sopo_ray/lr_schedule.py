"""Learning-rate schedules: linear warm-up then cosine decay, the one shape every trainer here uses.

    alignment   warmup_cosine(step, schedule.total_steps, optimizer.warmup_steps, optimizer.lr)          floor 0
    pretraining warmup_cosine(step, steps, pretrain.warmup_steps, pretrain.lr, floor=0.1)               floor 10%
    reward, evaluator  warmup_cosine(step, steps, warmup, overlap=True): a multiplier for LambdaLR whose cosine
                runs from step 0 with the warm-up ramp laid over its start (TMR's and T2M's shape)
"""

from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, warmup: int, peak: float = 1.0, floor: float = 0.0,
                  overlap: bool = False) -> float:
    """The learning rate at `step` (0-based) of `total`: a linear ramp to `peak` over `warmup` steps, then a cosine
    from `peak` down to `floor * peak` at `total` (held there after). `overlap`: the cosine runs over all `total`
    steps from step 0 and the ramp multiplies it (no floor)."""
    if overlap:
        return peak * min(1.0, (step + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / max(1, total))))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))
