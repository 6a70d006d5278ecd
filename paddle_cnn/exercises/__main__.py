"""``python -m paddle_cnn.exercises [NAME ...]``: every exercise's reference (or the named ones) checked against itself."""
import sys

from . import EXERCISES, self_check

unknown = [name for name in sys.argv[1:] if name not in EXERCISES]
if unknown:
    print(f"no exercise {', '.join(map(repr, unknown))}; the exercises are: {', '.join(EXERCISES)}", file=sys.stderr)
    sys.exit(2)
sys.exit(0 if self_check(sys.argv[1:] or None) else 1)
