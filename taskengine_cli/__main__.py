"""``python -m taskengine_cli``: the same as the ``taskengine`` console script."""

import sys

from taskengine_cli.main import main

sys.exit(main())
