"""Page walking in the SDK: an empty token ends a list, a repeated one is an error
rather than an endless loop."""

from __future__ import annotations

import pytest
from pacsd.client._paging import PageTokens
from pacsd.client.errors import InternalError


def test_tokens_are_followed_until_an_empty_one() -> None:
    tokens = PageTokens("ListAddins", "127.0.0.1:50051")
    assert tokens.follow("a") and tokens.follow("b")
    assert tokens.follow("") is False


def test_a_repeated_token_names_the_call_and_the_server() -> None:
    tokens = PageTokens("ListAETitles", "127.0.0.1:50051")
    assert tokens.follow("p2")
    with pytest.raises(InternalError, match="ListAETitles returned page token 'p2' twice") as err:
        tokens.follow("p2")
    assert err.value.endpoint == "127.0.0.1:50051"
