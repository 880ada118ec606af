"""Why a socket is not read: one bit per reason, so that one letting go does not
resume a socket another still holds.

The dispatcher pauses reading while its inbox is full (``INBOX``), the rate
limiter while the client is in debt (``RATE``); the transport is resumed only
when no reason is left. The close path, which must read until the client's
Close, lets go of every reason (``ALL``).
"""

from __future__ import annotations

from typing import Final

__all__ = ["ALL", "INBOX", "RATE"]

INBOX: Final = 1
"""The dispatcher's inbox is above its high water."""
RATE: Final = 2
"""The client is past its rate limit."""
ALL: Final = INBOX | RATE
