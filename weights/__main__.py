"""`python -m weights` is the same as `python -m weights.fetch`."""

import sys

from weights.fetch import main

sys.exit(main())
