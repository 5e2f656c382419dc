"""Tests of the relay part."""
