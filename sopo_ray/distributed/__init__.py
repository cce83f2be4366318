"""The distributed semi-online trainer: rollout pool, replay queue, weight store, learners and the driver on Ray.

`cluster.py` decides how the trainer meets a cluster (start/join Ray, where each actor runs, resource checks,
autoscaler requests); the other modules implement the semi-online schedule on top of it.
"""
