"""A long fuzzing run of what a robot can send to the server (tests/test_wire_fuzz.py).

For any frame, decoding and validation must give a valid observation or an InputError.
CI runs 150 examples per strategy; this runs as many as asked, with fresh randomness,
and prints how many frames each strategy tried:

    python benchmarks/fuzz_wire.py --examples 20000
"""

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20_000, help="examples per strategy (4 strategies)")
    args = parser.parse_args()
    environment = {**os.environ, "OPENPI_FUZZ_EXAMPLES": str(args.examples)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--hypothesis-show-statistics"]
    result = subprocess.run(
        [*command, str(ROOT / "tests" / "test_wire_fuzz.py")], cwd=ROOT, env=environment, capture_output=True, text=True
    )
    print(result.stdout[-20_000:], result.stderr[-5_000:], sep="\n")
    tried = [int(n) for n in re.findall(r"- (\d+) passing", result.stdout)]
    print(
        f"frames tried: {sum(tried)} ({', '.join(map(str, tried))} per strategy); pytest exit code {result.returncode}"
    )
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
