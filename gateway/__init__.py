"""The Starlette gateway: the router (every mode rule) and the store it keeps its state in (memory,
or Redis for several replicas), the rollback breaker, credentials, the session issuer, the
launcher, health, metrics and the page (the `voicegw` CLI that serves it is `voicegw/`)."""
