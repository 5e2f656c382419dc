"""pydantic validation errors, described for people without echoing what was sent."""

from __future__ import annotations

from pydantic import ValidationError


def validation_problems(exc: ValidationError, *, whole: str = "") -> list[tuple[str, str]]:
    """(where, what) per error: the dotted field path (`whole` when the error is about the
    whole input) and pydantic's message. Inputs and URLs are left out, so no value sent (a
    secret, say) comes back in the text."""
    return [
        (".".join(str(part) for part in error["loc"]) or whole, error["msg"])
        for error in exc.errors(include_input=False, include_url=False)
    ]


def describe_validation_error(exc: ValidationError, *, whole: str = "") -> str:
    """One line naming every problem: `field: message; other.field: message`."""
    problems = validation_problems(exc, whole=whole)
    return "; ".join(f"{where}: {what}" if where else what for where, what in problems)
