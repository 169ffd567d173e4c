"""The ``diffembed`` command line; the only package that builds argparse parsers."""

from diffembed.cli.main import main

__all__ = ["main"]
