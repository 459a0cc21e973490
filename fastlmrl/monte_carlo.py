"""monte_carlo (public API). To be written."""

__all__ = []
