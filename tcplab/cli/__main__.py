"""``python -m tcplab.cli``: the ``tcplab`` command."""

import sys

from tcplab.cli import main

sys.exit(main())
