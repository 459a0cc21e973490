"""Numba group_advantages kernels."""

__all__ = []
