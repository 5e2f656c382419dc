# Two entry points do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian packages the tests need: espeak-ng speaks the test utterances, sox measures audio,
# chromium runs the meeting page (tests/browser drive it with Playwright; never its own download);
# iproute2 makes the network namespaces WebRTC tests run in (libwebrtc ignores loopback);
# redis-server is the shared store the replica tests start on a free port of their own.
DEBIAN_PACKAGES := espeak-ng sox libportaudio2 chromium iproute2 redis-server postgresql
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: run test lint types pytest system-deps schemas bench clean vendor lock

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/voicegw serve --host $(HOST) --port $(PORT)

system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

types: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) system-deps
	$(BIN)/pytest -q

test: lint types pytest

schemas: $(STAMP)
	$(BIN)/voicegw schemas

# The page's livekit-client is committed under client-config/vendor/ (so `make run` needs no
# npm); this refreshes it from the version pinned in package.json / package-lock.json.
vendor:
	npm ci --no-audit --no-fund
	cp node_modules/livekit-client/dist/livekit-client.esm.mjs client-config/vendor/
	cp node_modules/livekit-client/LICENSE client-config/vendor/livekit-client.LICENSE

# The image installs its dependencies from requirements.lock (exact versions and hashes, for
# the image's Python and platform); regenerate it whenever pyproject.toml's dependencies
# change (a test fails until then).
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --quiet --generate-hashes --annotation-style line \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  --custom-compile-command "make lock" --output-file requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
