"""Test add-in: claims C-ECHO, which the built-in verification add-in owns."""

from __future__ import annotations

from pacsd.addin import Addin, EchoRequest, Status, dimse


class EchoTwin(Addin):
    name = "echo_twin"

    @dimse.c_echo()
    def on_echo(self, req: EchoRequest) -> int:
        return Status.SUCCESS
