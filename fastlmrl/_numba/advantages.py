"""Numba advantages kernels."""

__all__ = []
