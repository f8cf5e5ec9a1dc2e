"""The ``message_log`` add-in's level in any case, as the server's own is taken.

``pacsctl addin settings message_log --set level=info`` was refused (only ``INFO``),
while the server's ``log_level`` and ``pacsctl logs --level`` take ``info``.
"""

from __future__ import annotations

import pytest
from pacsd.builtin.message_log import MessageLogSettings
from pydantic import ValidationError


def test_level_in_any_case() -> None:
    assert MessageLogSettings.model_validate({"level": "info"}).level == "INFO"
    assert MessageLogSettings.model_validate({"level": "Warning"}).level == "WARNING"


def test_unknown_level_is_still_refused() -> None:
    with pytest.raises(ValidationError, match="level"):
        MessageLogSettings.model_validate({"level": "loud"})
