"""The ``backbeat`` command line."""
