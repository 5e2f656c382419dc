"""Tests of the image and its deployment files (Dockerfile, deploy/, railway.json)."""
