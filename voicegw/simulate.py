"""Simulate wiring: every provider as a local simulator, and Settings pointed at them.

`voicegw serve --simulate`, `voicegw talk --simulate`, `voicegw compare --simulate`, the tests'
`stack` fixture and the benchmarks build the simulated stack here, so what they exercise is
one and the same thing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Unpack

from pydantic import SecretStr

from pipelines.contracts import Settings
from simulators.profiles import (
    GivenSimulators,
    LatencyProfile,
    SimulatedProviders,
    simulated_providers,
)

from .providers import SIMULATED_IN_DEV, simulated_variables


def with_overrides(settings: Settings, env: Mapping[str, str]) -> Settings:
    """`settings` pointed at other endpoints (the simulators' known-good URLs and keys)."""
    update: dict[str, Any] = {
        name.lower(): SecretStr(value) if name.endswith("_API_KEY") else value
        for name, value in env.items()
    }
    return settings.model_copy(update=update)


@dataclass(frozen=True)
class SimulatedStack:
    """The simulated providers, running, and `settings` pointed at those in `simulated`
    (`env`: the variables that do it)."""

    providers: SimulatedProviders
    settings: Settings
    simulated: frozenset[str]
    env: dict[str, str]


@contextlib.asynccontextmanager
async def simulated_stack(
    settings: Settings,
    profile: LatencyProfile | str = "published",
    *,
    speak_replies: bool = True,
    only: Collection[str] | None = None,
    **given: Unpack[GivenSimulators],
) -> AsyncIterator[SimulatedStack]:
    """Start every provider simulator for `profile` until the block ends; `settings` come back
    pointed at them, or only at those named in `only` (`voicegw.providers` names; the others
    stay as configured). A simulator given here is used (and served) instead of a default
    one."""
    simulated = SIMULATED_IN_DEV if only is None else frozenset(only) & SIMULATED_IN_DEV
    variables = simulated_variables(simulated)
    async with simulated_providers(profile, speak_replies=speak_replies, **given) as providers:
        env = {name: value for name, value in providers.env.items() if name in variables}
        yield SimulatedStack(providers, with_overrides(settings, env), simulated, env)
