"""The gateway's domain errors: why a session or a launch cannot be made.

The router, the issuer and the launcher raise them; the HTTP layer (`gateway/app.py`) maps
each kind to a status code, and `voicegw launch` prints it. `code` is a stable
machine-readable name; the message names the problem for a person and never echoes a
credential.
"""

from __future__ import annotations


class GatewayError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class InvalidRequest(GatewayError):
    """What was asked for is malformed: the caller can fix it."""


class NotConfigured(GatewayError):
    """This gateway lacks the configuration to do it (a mode, or the Recall.ai key)."""


class Unavailable(GatewayError):
    """Something the gateway keeps is unreachable for now (the history database): try later."""


class UpstreamFailed(GatewayError):
    """A service the gateway calls refused or could not be reached."""


class RateLimited(GatewayError):
    """One caller asked too often: it may try again after `retry_after_s`."""

    def __init__(self, code: str, message: str, *, retry_after_s: float) -> None:
        super().__init__(code, message)
        self.retry_after_s = retry_after_s
