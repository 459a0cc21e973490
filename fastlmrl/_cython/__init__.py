"""The Cython backend: compiled ``nogil`` kernels; the ``.pxd`` files ship for ``cimport``."""

from .._topics import gather

NAME = "cython"
try:  # Cython is a build requirement only; report its version when it is installed
    from Cython import __version__ as CYTHON_VERSION
except ImportError:  # pragma: no cover
    CYTHON_VERSION = "unknown (Cython not installed at run time)"
__all__ = gather(__name__, globals())
