"""Tests for the sidecar proxy, mirroring proxy/."""
