"""The context an add-in receives in ``start``: its handle on the server's base services."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class AddinContext:
    """Base services handed to an add-in.

    Add-ins keep the context and use only what is on it; the server decides which
    implementation stands behind each service.
    """

    #: The add-in's name, as registered.
    name: str
    #: Logger whose records are tagged with this add-in as their source.
    log: logging.Logger
    #: The add-in's settings from the server configuration (validated by the add-in).
    settings: dict[str, Any] = field(default_factory=dict)
