"""Tests of the composition root: the CLI, the serve and simulate wiring, the agent command."""
