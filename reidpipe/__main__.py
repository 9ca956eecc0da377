"""``python -m reidpipe``: the same as the ``reidpipe`` command."""

import sys

from reidpipe.cli import main

sys.exit(main())
