"""Subcommands of the analyze stage, registered on the main parser by cli.make_parser."""

from __future__ import annotations

import argparse


def add_commands(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add this stage's subcommands (imports of heavy libraries stay inside the command functions)."""
