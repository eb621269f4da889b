#!/usr/bin/env python3
"""Makes N synthetic run folders from one real run folder, for timing
`runner report` on many runs:

    python3 bench/make_synthetic_runs.py RUN_DIR OUT_DIR 1000
    time runner report OUT_DIR > /dev/null

Each copy gets its own seed and learning rate in config.toml and a jittered
best accuracy in summary.json; metrics.csv and best.safetensors are copied
as they are (report checks that a completed run's checkpoint loads).
"""
import json
import os
import re
import shutil
import sys


def main():
    src, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    config = open(os.path.join(src, "config.toml")).read()
    summary = json.load(open(os.path.join(src, "summary.json")))
    lrs = [0.001, 0.003, 0.01, 0.03, 0.1]
    for i in range(n):
        seed, lr = i // len(lrs), lrs[i % len(lrs)]
        run = os.path.join(out, "synthetic", f"lr={lr},seed={seed}")
        os.makedirs(run, exist_ok=True)
        text = re.sub(r"(?m)^seed = \d+", f"seed = {seed}", config)
        text = re.sub(r"(?m)^lr = [0-9.e-]+", f"lr = {lr}", text)
        open(os.path.join(run, "config.toml"), "w").write(text)
        s = dict(summary, best_val_acc=summary["best_val_acc"] - 0.0001 * (i % 7), run_id=os.path.basename(run))
        json.dump(s, open(os.path.join(run, "summary.json"), "w"), indent=2)
        for name in ("metrics.csv", "best.safetensors"):
            shutil.copy(os.path.join(src, name), os.path.join(run, name))


if __name__ == "__main__":
    main()
