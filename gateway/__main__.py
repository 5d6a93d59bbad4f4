"""``python -m gateway`` does what the ``dsgw`` console script does."""

import sys

from gateway.cli import main

sys.exit(main())
