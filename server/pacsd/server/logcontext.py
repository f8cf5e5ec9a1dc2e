"""Which association the current code runs for, so every log record can say so.

Dispatch and hook fan-out set it around add-in calls; the logging filter reads it. A
ContextVar follows the call into the worker pool (``AddinRecord.call`` copies the
context), so records from time-limited handlers are tagged too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from pacsd.addin import AssociationInfo

current_association: ContextVar[AssociationInfo | None] = ContextVar(
    "pacsd_association", default=None
)


@contextmanager
def association(info: AssociationInfo | None) -> Iterator[None]:
    token = current_association.set(info)
    try:
        yield
    finally:
        current_association.reset(token)
