"""Reference dynamic_programming kernels (plain Python). Filled in by the dynamic_programming work."""

__all__ = []
