"""The Verification SOP Class SCP (C-ECHO), as an ordinary add-in.

It lives outside the core on purpose: a server with this add-in disabled does not
answer C-ECHO, exactly as for any other service.
"""

from __future__ import annotations

from pacsd.addin import Addin, EchoRequest, Status, dimse


class VerificationAddin(Addin):
    name = "verification"
    version = "1.0.0"
    description = "Answers C-ECHO (Verification SOP Class) with success."

    @dimse.c_echo()
    def on_echo(self, req: EchoRequest) -> int:
        return Status.SUCCESS
