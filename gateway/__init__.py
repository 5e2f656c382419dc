"""The Starlette gateway: routing, credentials, session config, health, the `voicegw` CLI."""
