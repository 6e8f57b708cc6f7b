"""`python -m tests.commands.meshctl_cli ...`: meshctl with up/down/status/intercept/image.

Until meshctl/cli.py registers these commands, this adds them to its app; once it does,
this is plain `meshctl`.
"""

from __future__ import annotations

from meshctl.cli import app
from meshctl.commands import down, image, intercept, status, up

_names = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
if "up" not in _names:
    app.command()(up.up)
    app.command()(down.down)
    app.command()(status.status)
if not any(g.name == "intercept" for g in app.registered_groups):
    app.add_typer(intercept.app, name="intercept")
if not any(g.name == "image" for g in app.registered_groups):
    app.add_typer(image.app, name="image")

if __name__ == "__main__":
    app()
