"""What crosses every package: whole runs of the gateway, relay, executor and simulators."""
