"""`sopo experiment`: SoPo against its baselines over training seeds, on both held-out splits, and its ablations.

    runner   the Experiment: inputs, aligned runs (local loop or Ray Driver), evaluations, compare and ablate
    jobs     the Ray tasks it runs: one alignment, one evaluation of one model on one split
    seeds    a method's numbers over its training seeds, and SoPo's verdict against each other row
    cost     training cost in wall time and network passes (equal learner compute)
    report   results.md and the figures
"""
