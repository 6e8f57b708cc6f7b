"""`python -m proxy ...` is `meshctl proxy ...` (lean: no Typer unless --help or a usage error)."""

from proxy.run import main

main()
