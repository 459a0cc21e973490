"""The pure-Python reference backend: the specification every compiled kernel is tested against."""

from .._topics import gather

NAME = "python"
__all__ = gather(__name__, globals())
