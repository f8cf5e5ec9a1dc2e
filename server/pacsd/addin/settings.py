"""Typed add-in settings: subclass ``AddinSettings`` and name it in ``settings_model``.

Settings are validated when the add-in loads and on every update through the control
plane; an invalid update is refused with INVALID_ARGUMENT naming the field, and the add-in
keeps its previous settings. Unknown fields are errors, so typos never pass silently.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class AddinSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)
