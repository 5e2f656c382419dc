"""The page's JSON Schemas are generated from the contract models and committed as generated."""

from __future__ import annotations

from pipelines.contracts.schemas import SCHEMA_DIR, render_schemas


def test_committed_schemas_match_the_models() -> None:
    rendered = render_schemas()
    for name, text in rendered.items():
        path = SCHEMA_DIR / name
        assert path.is_file(), f"{name} missing: run `make schemas`"
        assert path.read_text(encoding="utf-8") == text, f"{name} drifted: run `make schemas`"
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.json")) == sorted(rendered)
