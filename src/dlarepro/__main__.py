"""``python -m dlarepro`` is the ``dla-repro`` command."""

import sys

from .cli import main

sys.exit(main())
