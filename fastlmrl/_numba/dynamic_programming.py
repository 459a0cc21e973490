"""Numba dynamic_programming kernels."""

__all__ = []
