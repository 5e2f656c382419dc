"""Tests of the latency lab: `voicegw talk` and `voicegw compare`."""
