"""The two voice pipelines and the contracts they share."""
