"""Numba log_probs kernels."""

__all__ = []
