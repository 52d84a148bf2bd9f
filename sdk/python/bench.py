#!/usr/bin/env python3
"""Runs ``python -m runegrid.bench`` (see src/runegrid/bench.py), from a checkout too:

python3 sdk/python/bench.py [--calls 200] [--tasks 10000] [--ray] [--json]
"""

import sys
from pathlib import Path

try:
    from runegrid.bench import main
except ImportError:  # not installed: use the sources next to this file
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    from runegrid.bench import main

sys.exit(main())
