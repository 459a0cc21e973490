"""Reference environments kernels (plain Python)."""

__all__ = []
