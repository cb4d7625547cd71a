"""Helpers for the test suite: real servers started on demand (``support.servers``)."""
