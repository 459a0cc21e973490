"""Numba monte_carlo kernels."""

__all__ = []
