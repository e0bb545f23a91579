"""``python -m eqsolve`` (also what ``torchrun -m eqsolve ...`` runs): the ``eqsolve`` CLI."""

import sys

from eqsolve.cli import main

if __name__ == "__main__":
    sys.exit(main())
