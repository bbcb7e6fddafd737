"""``python -m demo``: start the app."""

import sys

from demo.app import main

sys.exit(main())
