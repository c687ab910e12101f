"""``python -m tokenledger.cli``: the ``tokenledger`` command."""

import sys

from tokenledger.cli import main

sys.exit(main())
