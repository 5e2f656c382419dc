"""The Starlette gateway: routing, credentials, the session issuer, the launcher, the rollback
breaker, health, metrics and the page (the `voicegw` CLI that serves it is `voicegw/`)."""
