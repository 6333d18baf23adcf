"""Weftline: wiring (configuration, command line, process runner)."""

__version__ = "0.1.0"
