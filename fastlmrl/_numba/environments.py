"""Numba environments kernels."""

__all__ = []
