"""Tests for proxy/http1: bytes fed in, events and refusals checked."""
