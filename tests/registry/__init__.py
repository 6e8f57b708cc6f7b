"""Tests of the registry (control plane)."""
