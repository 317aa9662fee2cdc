"""``python -m shamsul_utils.workshop``: write the participants' copies (see :mod:`.participants`)."""

import sys

from .participants import main

sys.exit(main())
