"""Mode resolution: each rule, their precedence, and the rollout's statistical promises."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipelines.contracts.routing import RoutingPolicy, resolve_mode, rollout_bucket

KEYS = [f"user-{i}@example.com" for i in range(10_000)]


def test_default_rule_when_nothing_else_matches() -> None:
    assert resolve_mode(RoutingPolicy(), session_id="s") == ("openai", "default")
    policy = RoutingPolicy(default_mode="livekit")
    assert resolve_mode(policy, session_id="s") == ("livekit", "default")


def test_kill_switch_beats_url_flag_breaker_allowlist_and_rollout() -> None:
    policy = RoutingPolicy(
        force_mode="openai", allowlist=frozenset({"a@x.io"}), rollout_percent=100
    )
    decided = resolve_mode(
        policy, session_id="s", user="a@x.io", requested="livekit", breaker_open=True
    )
    assert decided == ("openai", "forced")


def test_breaker_beats_url_flag() -> None:
    decided = resolve_mode(RoutingPolicy(), session_id="s", requested="livekit", breaker_open=True)
    assert decided == ("openai", "breaker_open")


def test_url_flag_only_when_overrides_are_allowed() -> None:
    assert resolve_mode(RoutingPolicy(), session_id="s", requested="livekit") == (
        "livekit",
        "url_flag",
    )
    closed = RoutingPolicy(allow_override=False)
    assert resolve_mode(closed, session_id="s", requested="livekit") == ("openai", "default")


def test_url_flag_beats_allowlist() -> None:
    policy = RoutingPolicy(allowlist=frozenset({"a@x.io"}))
    assert resolve_mode(policy, session_id="s", user="a@x.io", requested="openai") == (
        "openai",
        "url_flag",
    )


def test_allowlist_is_case_insensitive_and_beats_rollout() -> None:
    policy = RoutingPolicy(allowlist=frozenset({"ana@example.com"}), rollout_percent=0)
    assert resolve_mode(policy, session_id="s", user="  Ana@Example.COM ") == (
        "livekit",
        "allowlist",
    )
    assert resolve_mode(policy, session_id="s", user="bob@example.com") == ("openai", "default")


def test_rollout_uses_user_then_session_id() -> None:
    user_in = next(k for k in KEYS if rollout_bucket(k) <= 10)
    user_out = next(k for k in KEYS if rollout_bucket(k) > 10)
    policy = RoutingPolicy(rollout_percent=10)
    assert resolve_mode(policy, session_id=user_out, user=user_in) == ("livekit", "rollout")
    assert resolve_mode(policy, session_id=user_in, user=user_out) == ("openai", "default")
    assert resolve_mode(policy, session_id=user_in) == ("livekit", "rollout")


def _murmur3_32(data: bytes, seed: int = 0) -> int:
    """Reference MurmurHash3 x86_32 (what Unleash's normalizedValue uses), written out."""
    c1, c2, h = 0xCC9E2D51, 0x1B873593, seed

    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (32 - r))) & 0xFFFFFFFF

    full = len(data) // 4 * 4
    for i in range(0, full, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = rotl((k * c1) & 0xFFFFFFFF, 15) * c2 & 0xFFFFFFFF
        h = (rotl(h ^ k, 13) * 5 + 0xE6546B64) & 0xFFFFFFFF
    k = int.from_bytes(data[full:], "little") if len(data) > full else 0
    if k:
        h ^= rotl((k * c1) & 0xFFFFFFFF, 15) * c2 & 0xFFFFFFFF
    h ^= len(data)
    for shift, mult in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
        h = (h ^ (h >> shift)) * mult & 0xFFFFFFFF
    return h ^ (h >> 16)


def test_bucket_is_the_unleash_compatible_murmur3_formula() -> None:
    assert _murmur3_32(b"hello") == 613153351  # the published murmur3 x86_32 test vector
    for key in KEYS[:300]:
        expected = _murmur3_32(f"voice-mode:{key}".encode()) % 100 + 1
        assert rollout_bucket(key) == expected


@pytest.mark.parametrize("percent", [1, 10, 25, 50, 90])
def test_rollout_share_is_within_two_points(percent: int) -> None:
    policy = RoutingPolicy(rollout_percent=percent)
    livekit = sum(resolve_mode(policy, session_id="s", user=k)[0] == "livekit" for k in KEYS)
    assert abs(livekit / len(KEYS) * 100 - percent) <= 2


def test_raising_the_percent_never_moves_a_livekit_key_back() -> None:
    previous: set[str] = set()
    for percent in range(0, 101, 5):
        policy = RoutingPolicy(rollout_percent=percent)
        current = {k for k in KEYS[:2000] if resolve_mode(policy, session_id=k)[0] == "livekit"}
        assert previous <= current
        previous = current
    assert len(previous) == 2000


def test_same_key_same_bucket_in_another_process() -> None:
    keys = KEYS[:200]
    code = (
        "import json,sys; from pipelines.contracts.routing import rollout_bucket; "
        "print(json.dumps([rollout_bucket(k) for k in json.load(sys.stdin)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(keys),
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout) == [rollout_bucket(k) for k in keys]


def test_sticky_fallback_comes_after_the_kill_switch_only() -> None:
    policy = RoutingPolicy(allowlist=frozenset({"a@x.io"}), rollout_percent=100)
    assert resolve_mode(
        policy, session_id="s", user="a@x.io", requested="livekit", fell_back=True
    ) == ("openai", "fallback")
    forced = RoutingPolicy(force_mode="livekit")
    assert resolve_mode(forced, session_id="s", fell_back=True) == ("livekit", "forced")


@pytest.mark.parametrize(
    "policy",
    [
        RoutingPolicy(),
        RoutingPolicy(allow_override=False),
        RoutingPolicy(allow_override=False, rollout_percent=5),
        RoutingPolicy(allow_override=False, default_mode="livekit"),
        RoutingPolicy(allow_override=False, allowlist=frozenset({"user-1@example.com"})),
        RoutingPolicy(force_mode="livekit"),
        RoutingPolicy(force_mode="openai", rollout_percent=100),
    ],
)
def test_selectable_modes_are_what_the_rules_can_answer(policy: RoutingPolicy) -> None:
    answered = {
        resolve_mode(policy, session_id=k, user=u, requested=r, breaker_open=b)[0]
        for k in KEYS[:200]
        for u in (None, "user-1@example.com")
        for r in (None, "livekit", "openai")
        for b in (False, True)
    }
    assert answered <= policy.selectable_modes()
    # ... and nothing more, but openai as the fallback of livekit.
    assert policy.selectable_modes() - answered <= {"openai"}
