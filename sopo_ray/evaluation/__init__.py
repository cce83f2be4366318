"""Evaluation only (never training or selection):

    evaluator.py     an independent T2M-style text/motion evaluator (trained on the train split only)
    t2m_official.py  the released T2M evaluator of Guo et al., imported key for key (real data)
    metrics.py       R-precision, FID, MM-Dist, Diversity, MultiModality, mean and 95% CI
    protocol.py      the replicated protocol behind `sopo evaluate` (generate, embed, score, repeat)
    tables.py        how results read: headers, `mean±ci` cells, the tables of evaluate, a run and an experiment
    report.py        a run's final evaluation: base vs aligned on every held-out split, report.json / report.md
"""
