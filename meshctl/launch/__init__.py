"""Launchers: put a proxy beside each workload (docker, compose, systemd, local processes)."""
