"""`python -m proxy ...` is `meshctl proxy ...`."""

from meshctl.commands.proxy import app

app()
