"""The composition root: the `voicegw` command line and the wiring it runs.

Only this package may import every other one (gateway, relay, the pipelines, the simulators):
`cli` parses the commands, `serve` serves the gateway, `simulate` points Settings at the
simulated providers, `agent` runs the LiveKit worker, `lab/` holds `talk` and `compare` of both
modes with their audio I/O. Below it every import points down; `pyproject.toml`'s
`[tool.importlinter]` contracts say so and `make test` checks them.
"""
