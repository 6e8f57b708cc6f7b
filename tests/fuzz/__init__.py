"""Hypothesis property tests for the parsers and matchers that read untrusted input.

The HTTP/1.1 core (the same ``check`` as the long fuzz target fuzz/http1.py), the config
loader on mutations of a real config, route matching against a reference matcher, and
SPIFFE ID parsing against the spec's grammar. ``HYPOTHESIS_PROFILE=fuzz`` runs each with
100x more examples (see conftest.py).
"""
