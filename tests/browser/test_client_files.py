"""The page's files agree with the contract and with the pinned npm package (no browser)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

CLIENT = Path(__file__).resolve().parents[2] / "client-config"
ROOT = CLIENT.parent


def _js_set(source: str, name: str) -> set[str]:
    match = re.search(rf"export const {name} = new Set\(\[(.*?)\]\)", source, re.S)
    assert match, f"{name} not found"
    return set(re.findall(r'"([^"]+)"', match.group(1)))


def _schema(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CLIENT / "schemas" / name).read_text())
    return data


def test_the_page_knows_exactly_the_state_messages_of_the_schema() -> None:
    schema = _schema("state-message.schema.json")
    types = set(schema["discriminator"]["mapping"])
    states = set(schema["$defs"]["AgentState"]["properties"]["state"]["enum"])
    source = (CLIENT / "voice-messages.js").read_text()

    assert _js_set(source, "STATE_MESSAGE_TYPES") == types
    assert _js_set(source, "AGENT_STATES") == states


def test_the_vendored_livekit_client_is_the_pinned_npm_release() -> None:
    pinned = json.loads((ROOT / "package.json").read_text())["dependencies"]["livekit-client"]
    lock = json.loads((ROOT / "package-lock.json").read_text())
    locked = lock["packages"]["node_modules/livekit-client"]["version"]
    vendored = (CLIENT / "vendor" / "livekit-client.esm.mjs").read_text()
    version = re.search(r'var version\$1 = "([^"]+)"', vendored)

    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned), "pin an exact version"
    assert locked == pinned
    assert version is not None and version.group(1) == pinned


def test_the_page_loads_nothing_from_outside_the_gateway() -> None:
    sources = {
        path.name: path.read_text()
        for path in [*CLIENT.glob("*.js"), *CLIENT.glob("*.html"), *CLIENT.glob("*.css")]
    }
    assert "index.html" in sources and "voice-client.js" in sources
    for name, text in sources.items():
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), name
        assert not re.search(r"""(import|from)\s*\(?\s*["'](https?:)?//""", text), name
        # Bare specifiers need a bundler or an import map; the page has neither.
        for specifier in re.findall(r"""(?:from|import)\s*\(?\s*["']([^"']+)["']""", text):
            assert specifier.startswith(("./", "/static/")), f"{name}: {specifier}"
