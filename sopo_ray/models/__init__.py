"""Base text-to-motion diffusion models (MDM- and MLD-style) behind one `MotionGenerator` interface."""

from sopo_ray.models.generator import (
    MotionGenerator,
    build_generator,
    load_generator,
    save_generator,
)

__all__ = ["MotionGenerator", "build_generator", "load_generator", "save_generator"]
