"""Tests of gateway/: the router and its stores (memory and Redis), the breaker, credentials, the
issuer, the launcher, the HTTP API."""
