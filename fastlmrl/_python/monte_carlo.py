"""Reference monte_carlo kernels (plain Python). Filled in by the monte_carlo work."""

__all__ = []
