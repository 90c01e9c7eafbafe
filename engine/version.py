"""The fedgwas version string, read from the installed package metadata when available."""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("fedgwas")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0+source"
