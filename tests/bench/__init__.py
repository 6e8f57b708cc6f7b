"""Tests of bench/: the harness runs end to end (no figure asserted), and its pure helpers."""
