"""Container health check (Dockerfile HEALTHCHECK): exit 0 when the service answers.

gateway: GET http://127.0.0.1:$PORT/healthz. agent: the LiveKit Agents worker's health
endpoint, GET http://127.0.0.1:$AGENT_HEALTH_PORT/ (8081, the worker's production default).
Standard library only, so it runs in the slim image without curl.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def health_url(environ: dict[str, str]) -> str:
    if environ.get("SERVICE", "gateway") == "agent":
        return f"http://127.0.0.1:{environ.get('AGENT_HEALTH_PORT', '8081')}/"
    return f"http://127.0.0.1:{environ.get('PORT', '8080')}/healthz"


def main() -> int:
    url = health_url(dict(os.environ))
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError):
        return 1


if __name__ == "__main__":
    sys.exit(main())
