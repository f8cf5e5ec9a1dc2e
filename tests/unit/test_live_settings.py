"""What GetSettings lets out of the process: no secret, whatever the setting."""

from __future__ import annotations

from pacsd.server.config import Settings
from pacsd.server.live_settings import MASK, RUNTIME, _mask


def test_secrets_are_masked() -> None:
    shown = _mask(
        {
            "index_url": "postgresql://pacs:s3cret@127.0.0.1:5432/pacs",
            "control_tokens": [{"name": "ci", "role": "viewer", "sha256": "ab" * 32}],
            "dicom_users": {"alice": "scrypt$16384$8$1$salt$hash"},
            "control_tls_key": "/etc/pacsd/control.key",
            "log_level": "INFO",
            "empty_token_list": [],
        }
    )
    assert shown["index_url"] == "postgresql://pacs:***@127.0.0.1:5432/pacs"
    assert shown["control_tokens"] == MASK
    assert shown["dicom_users"] == MASK
    assert shown["log_level"] == "INFO"
    assert shown["empty_token_list"] == []  # nothing to hide, and empty says so
    assert "s3cret" not in repr(shown) and "scrypt" not in repr(shown)


def test_runtime_settings_are_real_settings() -> None:
    assert set(RUNTIME) <= set(Settings.model_fields)
