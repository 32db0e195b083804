"""``python -m rf_test_trainer``: see the package docstring for the modes."""

import sys

from rf_test_trainer.modes import main

sys.exit(main())
