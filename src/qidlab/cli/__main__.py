"""``python -m qidlab.cli`` runs the ``qidlab`` command."""

import sys

from qidlab.cli import main

sys.exit(main())
