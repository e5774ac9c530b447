"""Cross-app tests: make the shared helpers beside this file (the bad-input corpus) importable under pytest's
importlib import mode."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
