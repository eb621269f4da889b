#!/usr/bin/env python3
"""Two runner builds against each other: is a change faster?

Runs `runner bench --json --no-epoch` of build A, then of build B, then A
again and so on, `--runs` times each, and prints per cell the median
images/s of each build, B's median over A's, and how often B beat A in a
pair. On a shared machine a single run moves by 10-25 % (other tenants),
so only alternating many short runs and comparing medians sees a change
of a few percent; a pair-win rate near 50 % says the difference is noise.
Arguments after `--` go to `runner bench` (choose the cells there):

    cp target/release/runner /tmp/runner-old     # before the change
    cargo build --release                        # after it
    python3 bench/ab.py /tmp/runner-old target/release/runner --runs 10 \\
        -- --data ../shared/data/mnist --variants sigmoid+avg --train-batches 256 --infer-batches none
"""
import argparse
import json
import statistics
import subprocess
import sys

from compare import cells_by_key  # bench/compare.py, beside this file


def bench(binary, seconds, extra):
    command = [binary, "bench", "--json", "--no-epoch", "--seconds", seconds, *extra]
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except OSError as e:
        sys.exit(f"ab.py: cannot run {binary}: {e}")
    if done.returncode != 0:
        sys.exit(f"ab.py: {' '.join(command)} failed:\n{done.stderr.strip()}")
    return cells_by_key(json.loads(done.stdout))


def main():
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s A B [--runs N] [--seconds S] [-- RUNNER_BENCH_ARGS ...]",
    )
    parser.add_argument("a", help="the build to compare against (e.g. before the change)")
    parser.add_argument("b", help="the build under test")
    parser.add_argument("--runs", type=int, default=10, help="runs of each build, alternating")
    parser.add_argument("--seconds", default="2", help="seconds per cell and run")
    argv = sys.argv[1:]
    # Everything after `--` is runner bench's.
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.bench_args = argv[split + 1:]
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    pairs = []
    for i in range(args.runs):
        print(f"run {i + 1}/{args.runs}", file=sys.stderr, flush=True)
        pairs.append((bench(args.a, args.seconds, args.bench_args), bench(args.b, args.seconds, args.bench_args)))
    print("| variant | mode | batch | A median | B median | B / A | B faster in |")
    print("|---|---|---|---|---|---|---|")
    for key in pairs[0][0]:
        a = [p[0][key] for p in pairs]
        b = [p[1][key] for p in pairs]
        wins = sum(y > x for x, y in zip(a, b))
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"| {key[0]} | {key[1]} | {key[2]} | {ma:,.0f} | {mb:,.0f} | {mb / ma:.3f} | {wins}/{len(pairs)} |")


if __name__ == "__main__":
    main()
