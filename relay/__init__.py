"""The OpenAI Realtime relay (legacy mode): auth, upstream connection, pumps, backpressure."""
