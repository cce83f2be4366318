"""`sopo toy`: the paper's 2-D illustration (Fig. 3, App. C.1) of offline vs online vs semi-online DPO, the whole
algorithm on the plane in a few hundred lines:

    world.py    the ground-truth two-mode preference, the offline sets, the reward model, `ToySettings`
    policy.py   the tiny 2-D diffusion policy and its pretraining (the reference)
    align.py    the three methods through the project's objectives (`align`: sample K, score, pick, one shared
                t and noise, `objective_loss`, step), the metrics, one run and the summary over seeds
    plot.py     the figure
"""
