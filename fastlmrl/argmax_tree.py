"""argmax_tree (public API). To be written."""

__all__ = []
