"""Tests of pipelines/openai_realtime/: the relay's protocol core, without sockets."""
