"""The adversarial corpus (see corpus.py): rows in test_corpus_*.py, run in child processes."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # so the row files can `import corpus`
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tbwrite
