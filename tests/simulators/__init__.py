"""Tests of simulators/: the stand-ins refuse what the real services refuse, and the real
clients understand what they answer."""
