"""The context an add-in receives in ``start``: its handle on the server's base services."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pacsd.addin.services import AETitles, DicomClient


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
    #: The add-in's validated settings: an instance of its ``settings_model`` (or a dict
    #: when it declares none). Replaced, not mutated, when settings are updated.
    settings: Any
    #: The registry of known peers (AE title, host, port).
    aetitles: AETitles | None = None
    #: Outgoing DICOM requests to registered peers (TCP_NODELAY set).
    dicom_client: DicomClient | None = None
