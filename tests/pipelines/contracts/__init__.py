"""Tests of pipelines/contracts/: what both modes share."""
