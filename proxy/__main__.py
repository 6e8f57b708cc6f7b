"""`python -m proxy ...` is `meshctl proxy ...` (lean: no Typer unless --help or a usage error).

An entry point, like meshctl/cli.py: the one module of proxy/ that may reach up to the
command line, for the documented Typer command that answers --help and usage errors.
"""

import sys

from proxy.run import main


def _documented(args: list[str]) -> None:
    from meshctl.commands.proxy import app

    app(args=args)


main(sys.argv[1:], _documented)
