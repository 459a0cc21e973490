"""Numba argmax_tree kernels."""

__all__ = []
