"""Numba policy_losses kernels."""

__all__ = []
