"""The latency lab: `voicegw talk` and `voicegw compare` of both modes, with their audio I/O."""
