"""Walking the pages of a list call, for the sync and the async clients alike."""

from __future__ import annotations

from pacsd.client.errors import InternalError


class PageTokens:
    """The page tokens one list call has followed.

    A server handing out the same page token twice would make a client loop forever,
    so a repeated token is an ``InternalError`` naming the call and the server.
    """

    def __init__(self, method: str, endpoint: str) -> None:
        self._method = method
        self._endpoint = endpoint
        self._seen: set[str] = set()

    def follow(self, token: str) -> bool:
        """True to fetch the page ``token`` names; False once the list is complete
        (an empty token)."""
        if not token:
            return False
        if token in self._seen:
            raise InternalError(
                f"{self._method} returned page token {token!r} twice", endpoint=self._endpoint
            )
        self._seen.add(token)
        return True
