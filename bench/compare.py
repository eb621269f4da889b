#!/usr/bin/env python3
"""runner against PyTorch on this machine, side by side, as a Markdown table.

Runs `runner bench --json` and `bench/pytorch_bench.py --json` with 1 and 2
threads each, alternating, `--repeat` times, and prints per cell runner's best,
PyTorch's best and the ratio, and the lowest ratio of a single repeat (each
side's best of its thread counts within that repeat), which shows how much
the verdict depends on the machine's moment, and the median repeat's ratio
(a repeat runs both sides one straight after the other, so its ratio sees
much the same machine). Each side gets the best of its thread counts and
repeats: on a shared machine interference only ever slows
a run down, and PyTorch with 2 threads on a loaded machine collapses. Needs a
release build of runner and a Python with torch and numpy:

    cargo build --release
    python3 bench/compare.py --data ../shared/data/mnist --seconds 3 --repeat 2
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run_json(command):
    print("+", " ".join(command), file=sys.stderr, flush=True)
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def cells_by_key(report):
    return {(c["variant"], c["mode"], c["batch_size"]): c["images_per_sec"] for c in report["cells"]}


def best_of(reports):
    best = {}
    for report in reports:
        for key, value in cells_by_key(report).items():
            best[key] = max(best.get(key, 0.0), value)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/mnist")
    parser.add_argument("--seconds", default="3")
    parser.add_argument("--runner", default=os.path.join(HERE, "..", "target", "release", "runner"))
    parser.add_argument("--python", default=sys.executable, help="the Python that has torch")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--variants", help="passed to both sides (default: both variants)")
    parser.add_argument("--train-batches", help="passed to both sides, e.g. 256 or none")
    parser.add_argument("--infer-batches", help="passed to both sides, e.g. 1000 or none")
    parser.add_argument("--no-epoch", action="store_true", help="skip timing an epoch on both sides")
    parser.add_argument("--save", metavar="FILE", help="also write every run's JSON report to FILE")
    args = parser.parse_args()
    # The same cells on both sides: one table cell can be measured alone.
    shared = []
    for flag in ("variants", "train_batches", "infer_batches"):
        value = getattr(args, flag)
        if value is not None:
            shared += ["--" + flag.replace("_", "-"), value]
    if args.no_epoch:
        shared.append("--no-epoch")
    thread_counts = args.threads.split(",")
    runner_reports, torch_reports = [], []
    for threads in thread_counts * args.repeat:
        runner_reports.append(run_json([args.runner, "bench", "--data", args.data, "--seconds", args.seconds,
                                        "--threads", threads, "--json", *shared]))
        torch_reports.append(run_json([args.python, os.path.join(HERE, "pytorch_bench.py"), "--data", args.data,
                                       "--seconds", args.seconds, "--threads", threads, "--json", *shared]))
    if args.save:
        with open(args.save, "w") as f:
            json.dump({"runner": runner_reports, "pytorch": torch_reports}, f, indent=2)
    ours, theirs = best_of(runner_reports), best_of(torch_reports)
    # Each repeat alone (best of its thread counts, per side): how far the
    # ratio moves between repeats on this machine.
    per_repeat = len(thread_counts)
    repeats = [(best_of(runner_reports[i:i + per_repeat]), best_of(torch_reports[i:i + per_repeat]))
               for i in range(0, len(runner_reports), per_repeat)]
    keys = [k for k in ours if k in theirs]
    cpu = runner_reports[0].get("cpu") or "unknown cpu"
    print(f"{cpu}; runner: {runner_reports[0]['device']}; PyTorch: {torch_reports[0]['device']}; "
          f"best of {args.threads} threads x {args.repeat} repeats each, images/s\n")
    print("| variant | mode | batch | runner | PyTorch | ratio | lowest repeat's ratio | median repeat's ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for key in keys:
        variant, mode, batch = key
        r, t = ours[key], theirs[key]
        ratios = [mine[key] / other[key] for mine, other in repeats]
        print(f"| {variant} | {mode} | {batch} | {r:,.0f} | {t:,.0f} | {r / t:.1f}x "
              f"| {min(ratios):.2f}x | {statistics.median(ratios):.2f}x |")
    print()
    for name, reports in (("runner", runner_reports), ("PyTorch", torch_reports)):
        for report in reports:
            epoch = report.get("epoch_seconds")
            rss = report.get("peak_rss_mb")
            epoch_text = f"{epoch:.2f} s" if epoch is not None else "n/a"
            rss_text = f"{rss:.0f} MB" if rss is not None else "n/a"
            print(f"- {name}, {report['threads']} threads: epoch of the seed's setup {epoch_text}, peak RSS {rss_text}")


if __name__ == "__main__":
    main()
