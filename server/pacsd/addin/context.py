"""The context an add-in receives in ``start``: its handle on the server's base services."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pacsd.addin.services import AETitles, DicomClient
    from pacsd.addin.storage import Storage


class ServiceLookup(Protocol):
    def get(self, name: str) -> Any: ...


class AddinContext:
    """Base services handed to an add-in.

    Add-ins keep the context and use only what is on it. Services are looked up on each
    access, so when another add-in replaces one (``Addin.provides``), every add-in
    sees the replacement from then on.
    """

    __slots__ = ("_services", "log", "name", "settings")

    def __init__(
        self,
        name: str,
        log: logging.Logger,
        settings: Any,
        services: ServiceLookup | None = None,
    ) -> None:
        #: The add-in's name, as registered.
        self.name = name
        #: Logger whose records are tagged with this add-in as their source.
        self.log = log
        #: The validated settings: an instance of the add-in's ``settings_model`` (or a
        #: dict when it declares none). Replaced, not mutated, when settings are updated.
        self.settings = settings
        self._services = services

    def service(self, name: str) -> Any:
        return None if self._services is None else self._services.get(name)

    @property
    def aetitles(self) -> AETitles:
        """The registry of known peers (AE title, host, port)."""
        return self.service("aetitles")

    @property
    def storage(self) -> Storage:
        """The archive: durable instance files and the query index."""
        return self.service("storage")

    @property
    def dicom_client(self) -> DicomClient:
        """Outgoing DICOM requests to registered peers (TCP_NODELAY set)."""
        return self.service("dicom_client")
