"""``python -m dicomdrop`` runs the command-line interface."""

from dicomdrop.cli import run

run()
