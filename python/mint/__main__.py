"""``python -m mint ...`` is the same as the ``mint`` command."""

import sys

from mint.cli import main

sys.exit(main())
