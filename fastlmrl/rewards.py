"""rewards (public API). To be written."""

__all__ = []
