"""dynamic_programming (public API). To be written."""

__all__ = []
