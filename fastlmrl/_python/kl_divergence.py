"""Reference kl_divergence kernels (plain Python)."""

__all__ = []
