"""`python -m meshctl` is the `meshctl` command."""

from meshctl.cli import main

main()
