"""Backbeat: an open-source advertising platform for audio (music and podcasts)."""

__version__ = "0.1.0"
__all__ = ["__version__"]
