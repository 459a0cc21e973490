"""Numba optimizers kernels."""

__all__ = []
