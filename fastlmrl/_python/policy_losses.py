"""Reference policy_losses kernels (plain Python)."""

__all__ = []
