"""`voicegw launch`: a session and its Recall.ai bot, made by the running gateway or here.

A launch token is signed with GATEWAY_SECRET, and only a gateway holding the same secret
accepts it. `--gateway URL` asks the running gateway (`POST /v1/launch`, bearer
GATEWAY_API_KEY), so the page URL it hands out is always one it accepts. Without it, this
process runs the same launcher in-process, which is right only with the running gateway's
GATEWAY_SECRET: a dev process would otherwise sign with a temporary secret of its own.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError

from gateway.issuer import LaunchRequest, LaunchResponse
from pipelines.contracts import Settings

# Recall.ai's Create Bot may take the gateway's whole RECALL_TIMEOUT_SECONDS (at most 120).
REMOTE_TIMEOUT_S = 130.0

NO_SECRET = (
    "GATEWAY_SECRET is not set: a launch token signed here with a temporary secret would be "
    "refused by the running gateway. Set GATEWAY_SECRET to the gateway's, or pass --gateway "
    "URL (with GATEWAY_API_KEY) to have the running gateway launch"
)


class LaunchFailed(Exception):
    """The launch did not happen; the message says why, for a person."""


def check_gateway_url(url: str) -> str:
    """The running gateway's base URL. The API key travels with the request, so plain http
    is accepted only to this machine."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LaunchFailed(f"--gateway must be an http(s) URL, not {url!r}")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise LaunchFailed(
            "--gateway must be https (GATEWAY_API_KEY travels with the request), "
            "or http to this machine"
        )
    return url.strip().rstrip("/")


def launch_remote(gateway: str, api_key: str, request: LaunchRequest) -> LaunchResponse:
    """`POST {gateway}/v1/launch`; the gateway's own refusal (code and message) on failure."""
    url = f"{check_gateway_url(gateway)}/v1/launch"
    body = request.model_dump(exclude_none=True)
    headers = {"Authorization": f"Bearer {api_key}"}
    try:
        with httpx.Client(timeout=REMOTE_TIMEOUT_S) as http:
            response = http.post(url, json=body, headers=headers)
    except httpx.HTTPError as exc:
        # `from None`: the request, and the key in its headers, stays out of tracebacks.
        raise LaunchFailed(
            f"cannot reach the gateway at {gateway}: {type(exc).__name__}"
        ) from None
    payload = _json(response)
    if response.status_code != 201:
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict):
            code, message = error.get("code"), error.get("message")
            raise LaunchFailed(f"the gateway refused ({response.status_code} {code}): {message}")
        raise LaunchFailed(f"the gateway answered HTTP {response.status_code}")
    try:
        return LaunchResponse.model_validate(payload)
    except ValidationError:
        raise LaunchFailed("the gateway's answer is not a launch result") from None


async def launch_local(settings: Settings, request: LaunchRequest) -> LaunchResponse:
    """The launcher of `POST /v1/launch`, in this process. `settings` must hold the running
    gateway's GATEWAY_SECRET (load them without dev defaults)."""
    from gateway.app import Gateway

    if settings.gateway_secret is None:
        raise LaunchFailed(NO_SECRET)
    gateway = Gateway(settings)
    try:
        return await gateway.launcher.launch(request)
    finally:
        await gateway.aclose()


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
