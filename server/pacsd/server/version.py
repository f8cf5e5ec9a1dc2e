"""Version strings the server reports over the control plane."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

API_VERSION = "v1"

try:
    VERSION = version("pacsd")
except PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0.0.0+unknown"
