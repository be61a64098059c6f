"""
C{python -m pipe}: the C{txpipe} command.
"""

import sys

from pipe._cli.main import main

sys.exit(main())
