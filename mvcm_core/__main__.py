"""``python -m mvcm_core`` is the same as the ``mvcm`` console script."""

import sys

from mvcm_core.cli.main import main

sys.exit(main())
