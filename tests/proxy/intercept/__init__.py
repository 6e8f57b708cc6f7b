"""Tests of proxy/intercept: rendered rules (pure), iptables in namespaces, REDIRECT (root)."""
