"""Tests for proxy/policy: each state machine driven by a FakeClock and a seeded Random."""
