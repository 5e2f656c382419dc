"""Tests of the latency lab: profiles, simulate mode, compare."""
