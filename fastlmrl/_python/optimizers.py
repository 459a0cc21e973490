"""Reference optimizers kernels (plain Python)."""

__all__ = []
