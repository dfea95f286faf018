"""Regenerate the bundled sample data set: ``python data/make_sample.py [--out data/sample] [--seed 0]``.

The files are byte-identical for a given seed; the committed ones use seed 0 and the default sizes
(``tests/test_synthetic.py`` checks this).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from peterrec.data.synthetic import generate_sample  # noqa: E402

SEED = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default=str(Path(__file__).resolve().parent / "sample"), help="output folder"
    )
    parser.add_argument("--seed", type=int, default=SEED, help="random seed (the committed sample uses 0)")
    args = parser.parse_args()
    summary = generate_sample(args.out, seed=args.seed)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
