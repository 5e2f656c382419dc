"""Tests of gateway/: routing, credentials, the issuer, the launcher, the breaker, the HTTP API."""
