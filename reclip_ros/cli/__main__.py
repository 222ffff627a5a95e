"""``python -m reclip_ros.cli ...``: the same as the ``reclip`` command."""

import sys

from reclip_ros.cli import main

sys.exit(main())
