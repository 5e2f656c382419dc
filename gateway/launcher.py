"""The launcher: a session, its page URL and (given a meeting URL) the Recall.ai bot that loads
the page into the meeting.

Recall.ai's Create Bot (https://docs.recall.ai/reference/bot_create,
https://docs.recall.ai/docs/stream-media, https://docs.recall.ai/reference/authentication):
`POST {region root}/api/v1/bot/` with `Authorization: Token <key>` and a JSON body holding
`meeting_url`, `bot_name`, `output_media.camera = {"kind": "webpage", "config": {"url": …}}` and
`variant` per platform (`web_4_core` gives the page the CPU its audio work needs). It answers
201 with the bot, whose `id` we return. Errors come as JSON (`{"detail": …}` or per-field lists).
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any
from urllib.parse import urlsplit

import httpx

from pipelines.contracts.metrics import BOT_LAUNCHES

from .errors import InvalidRequest, NotConfigured, UpstreamFailed
from .issuer import LaunchRequest, LaunchResponse, SessionIssuer, new_session_id
from .router import Router

log = logging.getLogger("voicegw.launcher")

BOT_PATH = "/api/v1/bot/"
# Platforms whose bots we size; the page does audio work whichever one the meeting is on.
VARIANT_PLATFORMS = ("microsoft_teams", "zoom", "google_meet")
_MAX_MESSAGE = 300


class RecallError(Exception):
    """Recall.ai refused or could not be reached; the message is safe to return."""


class RecallClient:
    """The one Recall.ai call we make. `client` is injectable so tests reach a simulator."""

    def __init__(
        self,
        *,
        api_base: str,
        api_key: str,
        timeout_s: float = 15.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        """`api_base` is the region root (RECALL_API_BASE, e.g. https://us-west-2.recall.ai)."""
        self._url = api_base.rstrip("/") + BOT_PATH
        self._key = api_key
        self._timeout_s = timeout_s
        self._client = client

    async def create_bot(
        self,
        *,
        meeting_url: str,
        page_url: str,
        bot_name: str,
        variant: str,
        metadata: dict[str, str],
    ) -> str:
        """Create the bot; its id. Raises RecallError with Recall's own message on refusal."""
        body = {
            "meeting_url": meeting_url,
            "bot_name": bot_name,
            "output_media": {"camera": {"kind": "webpage", "config": {"url": page_url}}},
            "variant": {platform: variant for platform in VARIANT_PLATFORMS},
            "metadata": metadata,
        }
        headers = {"Authorization": f"Token {self._key}", "Accept": "application/json"}
        try:
            if self._client is not None:
                response = await self._client.post(
                    self._url, json=body, headers=headers, timeout=self._timeout_s
                )
            else:
                async with httpx.AsyncClient() as client:
                    response = await client.post(
                        self._url, json=body, headers=headers, timeout=self._timeout_s
                    )
        except httpx.TimeoutException:
            raise RecallError(
                f"Recall.ai did not answer within {self._timeout_s:g} seconds"
            ) from None
        except httpx.HTTPError:
            # `from None`: the request (and its Authorization header) stays out of tracebacks.
            raise RecallError("Recall.ai could not be reached") from None
        return self._bot_id(response)

    def _bot_id(self, response: httpx.Response) -> str:
        try:
            data: Any = response.json()
        except ValueError:
            data = None
        if response.status_code >= 400:
            detail = self._redact(_recall_message(data))
            why = f"Recall.ai refused to create the bot (HTTP {response.status_code})"
            raise RecallError(f"{why}: {detail}" if detail else why)
        bot_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(bot_id, str) or not bot_id:
            raise RecallError("Recall.ai answered without a bot id")
        return bot_id

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "[redacted]") if self._key else text


def _recall_message(data: Any) -> str:
    """Recall answers errors the Django REST framework way: {"detail": "..."}, or a list of
    messages per field ({"meeting_url": ["..."]}), sometimes nested."""
    if isinstance(data, str):
        return _clip(data.strip())
    if isinstance(data, list):
        return _clip("; ".join(m for m in (_recall_message(x) for x in data) if m))
    if not isinstance(data, dict):
        return ""
    if isinstance(data.get("detail"), str):
        return _clip(data["detail"].strip())
    parts = []
    for key, value in data.items():
        message = _recall_message(value)
        if message:
            parts.append(message if key == "non_field_errors" else f"{key}: {message}")
    return _clip("; ".join(parts))


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def check_meeting_url(value: str) -> str:
    """A meeting URL Recall can join: an absolute https URL (Teams, Zoom, Meet, Webex)."""
    parts = urlsplit(value.strip())
    if parts.scheme != "https" or not parts.hostname or any(c.isspace() for c in value.strip()):
        raise InvalidRequest(
            "invalid_meeting_url", "meeting_url must be an absolute https URL of a meeting"
        )
    return value.strip()


def page_problems(page_url: str) -> list[str]:
    """Why Recall.ai's bot could not use a page at `page_url` (empty when it can): the bot's
    browser runs in Recall's cloud, so it cannot reach this machine or a private network, and
    it gives a page a microphone only on https."""
    parts = urlsplit(page_url)
    host = (parts.hostname or "").lower()
    problems = []
    if _private_host(host):
        problems.append(f"Recall.ai cannot reach {host}: it is this machine or a private network")
    if parts.scheme != "https":
        problems.append("a page served over http:// gets no microphone in Recall.ai's browser")
    return problems


def _private_host(host: str) -> bool:
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "." not in host  # a bare machine name only resolves on its own network
    return address.is_private or address.is_loopback or address.is_link_local


class Launcher:
    """`POST /v1/launch` and `voicegw launch`: the same code, the endpoint and in-process."""

    def __init__(
        self,
        *,
        issuer: SessionIssuer,
        recall: RecallClient | None,
        bot_name: str,
        variant: str,
        router: Router,
    ) -> None:
        """`recall` is None when RECALL_API_KEY is not set (launches without a meeting URL
        still work). `router` previews the mode (it only informs the response: the page asks
        again when it loads)."""
        self._issuer = issuer
        self._recall = recall
        self._bot_name = bot_name
        self._variant = variant
        self._router = router

    async def launch(self, request: LaunchRequest) -> LaunchResponse:
        meeting_url = (
            check_meeting_url(request.meeting_url) if request.meeting_url is not None else None
        )
        if meeting_url is not None and self._recall is None:
            raise NotConfigured(
                "not_configured", "RECALL_API_KEY is not set, so no bot can be created"
            )
        session_id = request.session_id or new_session_id()
        mode, reason = await self._router.preview(
            session_id=session_id, user=request.user, requested=request.mode
        )
        result = self._issuer.launch(request, session_id=session_id, mode=mode, reason=reason)
        if meeting_url is None or self._recall is None:
            return result
        problems = page_problems(result.page_url)
        if problems:
            log.warning(
                "the bot's page will not work",
                extra={"session_id": result.session_id, "problems": problems},
            )
        try:
            bot_id = await self._recall.create_bot(
                meeting_url=meeting_url,
                page_url=result.page_url,
                bot_name=self._bot_name,
                variant=self._variant,
                metadata={"session_id": result.session_id},
            )
        except RecallError as exc:
            BOT_LAUNCHES.labels(status="error").inc()
            log.warning(
                "recall bot creation failed",
                extra={"session_id": result.session_id, "error": str(exc)},
            )
            raise UpstreamFailed("recall_error", str(exc)) from None
        BOT_LAUNCHES.labels(status="ok").inc()
        log.info("recall bot created", extra={"session_id": result.session_id, "bot_id": bot_id})
        return result.model_copy(update={"bot_id": bot_id})
