"""Chaos and hostile-input tests through real registries and proxies on 127.0.0.1.

Each test states the number of failed requests it expects; docs/chaos.md is generated from
these tests and the older ones they extend by ``python -m tests.chaos.report docs/chaos.md``.
"""
