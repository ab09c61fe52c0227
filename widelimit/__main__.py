"""``python -m widelimit``: the ``widelimit`` command (:mod:`widelimit.cli`)."""
import sys

from widelimit.cli import main

if __name__ == "__main__":
    sys.exit(main())
