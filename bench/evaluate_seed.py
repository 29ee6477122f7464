#!/usr/bin/env python3
"""Times the seed's own Python simulator: N rollouts of its default policy.

The simulator's code is read at run time from the seed document
(../shared/seeds/000_e854880c56b4c5c5.txt beside this repository): the block
from the line starting with '\"\"\"Canary Rollout Simulator' to the end of its
`if __name__ == "__main__":` block. None of it is copied here.

Prints one JSON object: rollouts, seconds, rollouts_per_s, rolled_back.
"""

import argparse
import json
import pathlib
import random
import sys
import time
import types

HERE = pathlib.Path(__file__).resolve().parent
SEED_DOC = HERE.parent.parent / "shared" / "seeds" / "000_e854880c56b4c5c5.txt"


def extract(text: str) -> str:
    lines = text.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith('"""Canary Rollout Simulator'))
    main = next(i for i in range(start, len(lines)) if lines[i].startswith('if __name__ == "__main__":'))
    end = main + 1
    while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end].strip()):
        end += 1
    return "\n".join(lines[start:end]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rollouts", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--doc", type=pathlib.Path, default=SEED_DOC)
    args = ap.parse_args()
    code = extract(args.doc.read_text())
    # dataclasses needs the module registered under its name.
    mod = types.ModuleType("seed_simulator")
    sys.modules["seed_simulator"] = mod
    exec(compile(code, str(args.doc), "exec"), mod.__dict__)
    ns = mod.__dict__
    stages = ns["default_stages"]()
    rolled_back = 0
    start = time.perf_counter()
    for i in range(args.rollouts):
        r = ns["CanaryRollout"](stages, latency_threshold_ms=50).execute(
            baseline_error_rate=0.01,
            baseline_latency_ms=100,
            rng=random.Random(args.seed * 1_000_003 + i),
        )
        rolled_back += r.phase.value == "rolled_back"
    secs = time.perf_counter() - start
    print(json.dumps({
        "rollouts": args.rollouts,
        "seconds": secs,
        "rollouts_per_s": args.rollouts / secs,
        "rolled_back": rolled_back / args.rollouts,
    }))


if __name__ == "__main__":
    main()
