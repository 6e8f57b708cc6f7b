"""Tests for meshctl.commands: each command group through Typer's CliRunner."""
