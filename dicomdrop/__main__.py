"""``python -m dicomdrop`` runs the command-line interface."""

import sys

from dicomdrop.cli import main

sys.exit(main())
