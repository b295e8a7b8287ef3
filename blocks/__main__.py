"""`python -m blocks register ...` (see blocks/cli.py)."""

from __future__ import annotations

import sys

from blocks.cli import main

if __name__ == "__main__":
    sys.exit(main())
