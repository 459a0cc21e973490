"""Numba kl_divergence kernels."""

__all__ = []
