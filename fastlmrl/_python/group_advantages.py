"""Reference group_advantages kernels (plain Python)."""

__all__ = []
