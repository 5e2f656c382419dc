"""voice-gateway tests."""
