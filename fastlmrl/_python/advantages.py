"""Reference advantages kernels (plain Python)."""

__all__ = []
