"""Tests for registry.config."""
