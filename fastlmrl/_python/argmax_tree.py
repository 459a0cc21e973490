"""Reference argmax_tree kernels (plain Python). Filled in by the argmax_tree work."""

__all__ = []
