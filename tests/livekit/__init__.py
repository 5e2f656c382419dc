"""Tests of the livekit part."""
