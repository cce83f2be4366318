"""Evaluation only (never training or selection): an independent T2M-style evaluator, the T2M metrics, and the
replicated protocol behind `sopo evaluate`."""

from sopo_ray.evaluation.evaluator import T2MEvaluator, load_evaluator, train_evaluator
from sopo_ray.evaluation.protocol import COLUMNS, evaluate_generator, evaluate_real

__all__ = ["COLUMNS", "T2MEvaluator", "evaluate_generator", "evaluate_real", "load_evaluator", "train_evaluator"]
