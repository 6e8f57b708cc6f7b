"""Tests of registry/ca: SPIFFE IDs, SVID issuance and verification, join tokens."""
