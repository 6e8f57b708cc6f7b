"""`meshctl image build`: the example's container image, made locally (meshctl.launch.image)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from meshctl.launch.image import DEFAULT_CACHE, DEFAULT_TAG, ImageError, ensure_image
from meshctl.launch.procs import LaunchError

app = typer.Typer(
    help="Container images for the examples, built locally (no registry needed).",
    no_args_is_help=True,
)


@app.command("build")
def build(
    tag: Annotated[str, typer.Option(help="The image's name.")] = DEFAULT_TAG,
    cache: Annotated[
        Path, typer.Option(help="Where the root filesystem tarball is kept between builds.")
    ] = DEFAULT_CACHE,
    mirror: Annotated[
        str | None, typer.Option(help="Debian mirror (default: the one apt uses).")
    ] = None,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Debootstrap again, even if cached.")
    ] = False,
    output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
) -> None:
    """Build meshctl-example:latest: debootstrap a Debian with python3, `docker import` it.

    About a minute the first time; then the cached tarball (or the image itself) is reused.
    """
    try:
        res = ensure_image(tag, cache=cache, mirror=mirror, rebuild=rebuild)
    except (ImageError, LaunchError) as exc:
        typer.echo(f"meshctl image build: {exc}", err=True)
        raise typer.Exit(1) from None
    if output == "json":
        typer.echo(json.dumps({"tag": res.tag, "id": res.image_id, "source": res.source,
                               "seconds": round(res.seconds, 1)}))  # fmt: skip
        return
    how = {"engine": "already built", "cache": "imported from the cached root filesystem",
           "debootstrap": "debootstrapped and imported"}[res.source]  # fmt: skip
    typer.echo(f"{res.tag} ({res.image_id[7:19]}): {how} in {res.seconds:.1f}s")
