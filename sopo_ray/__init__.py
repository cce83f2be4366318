"""sopo_ray: semi-online preference optimisation (SoPo) for text-to-motion diffusion, on Ray."""

__version__ = "0.1.0"
