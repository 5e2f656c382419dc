"""Tests of the ops part."""
