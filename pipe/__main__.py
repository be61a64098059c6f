"""
C{python -m pipe}: the C{txpipe} command.
"""

import sys

from ._cli import main

sys.exit(main())
