"""Tests of the meshctl commands (CLI level)."""
