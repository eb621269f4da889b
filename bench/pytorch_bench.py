#!/usr/bin/env python3
"""The seed's MyLeNet5 in PyTorch, timed the way `runner bench` times runner.

Data is decoded into memory first (no DataLoader), so the numbers measure
forward + backward + SGD step only. Prints the same table as `runner bench`
(or JSON with --json). Needs torch and numpy:

    python3 bench/pytorch_bench.py --data data/mnist --threads 1
    python3 bench/pytorch_bench.py --data data/mnist --threads 2

Compare against the better of 1 and 2 threads: on a loaded 2-core machine
PyTorch's 2-thread numbers collapse.
"""
import argparse
import gzip
import json
import os
import resource
import time

import numpy as np
import torch
from torch import nn


class MyLeNet5(nn.Module):
    """The seed notebook's model, with the activation and pooling made choosable."""

    def __init__(self, act=nn.Sigmoid, pool=nn.AvgPool2d):
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, kernel_size=5, padding=2)
        self.act = act()
        self.s2 = pool(kernel_size=2, stride=2)
        self.c3 = nn.Conv2d(6, 16, kernel_size=5)
        self.s4 = pool(kernel_size=2, stride=2)
        self.c5 = nn.Conv2d(16, 120, kernel_size=5)
        self.flatten = nn.Flatten()
        self.f6 = nn.Linear(120, 84)
        self.output = nn.Linear(84, 10)

    def forward(self, x):
        x = self.s2(self.act(self.c1(x)))
        x = self.s4(self.act(self.c3(x)))
        x = self.flatten(self.c5(x))
        return self.output(self.f6(x))


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(data_dir, prefix):
    def find(name):
        for candidate in (name + ".gz", name):
            path = os.path.join(data_dir, candidate)
            if os.path.exists(path):
                return path
        raise SystemExit(f"{name}(.gz) not found in {data_dir}")

    images = read_idx(find(f"{prefix}-images-idx3-ubyte")).astype(np.float32) / 255.0
    labels = read_idx(find(f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels)


def timed(images, labels, batch, seconds, step):
    n = images.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    starts = list(range(0, n - batch + 1, batch))
    i = 0

    def next_batch():
        nonlocal i
        idx = order[starts[i % len(starts)]: starts[i % len(starts)] + batch]
        i += 1
        return images[idx], labels[idx]

    for _ in range(3):
        step(*next_batch())
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step(*next_batch())
        count += batch
    return count, time.perf_counter() - started


def batch_sizes(parser, flag, text):
    """The sizes in `text` ("16,64" or "none"), as `runner bench` reads them."""
    if text == "none":
        return []
    try:
        sizes = [int(b) for b in text.split(",")]
    except ValueError:
        parser.error(f"{flag}: expected comma-separated batch sizes or none, got {text!r}")
    if any(b <= 0 for b in sizes):
        parser.error(f"{flag}: batch sizes must be positive, got {text!r}")
    return sizes


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/mnist")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-batches", default="16,64,256", help="comma-separated sizes, or none")
    parser.add_argument("--infer-batches", default="256,1000", help="comma-separated sizes, or none")
    parser.add_argument("--variants", default="sigmoid+avg,relu+max", help="as runner bench --variants")
    parser.add_argument("--no-epoch", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    known = {"sigmoid+avg": (nn.Sigmoid, nn.AvgPool2d), "relu+max": (nn.ReLU, nn.MaxPool2d)}
    wanted = args.variants.split(",")
    for name in wanted:
        if name not in known:
            parser.error(f"--variants: unknown variant {name!r} (known: {', '.join(known)})")
    variants = [(name, *known[name]) for name in wanted]
    train_sizes = batch_sizes(parser, "--train-batches", args.train_batches)
    infer_sizes = batch_sizes(parser, "--infer-batches", args.infer_batches)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    train_x, train_y = load(args.data, "train")
    test_x, test_y = load(args.data, "t10k")
    cells = []
    for name, act, pool in variants:
        for bs in train_sizes:
            model = MyLeNet5(act, pool)
            opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
            loss_fn = nn.CrossEntropyLoss()

            def train_step(x, y):
                opt.zero_grad()
                loss_fn(model(x), y).backward()
                opt.step()

            images, seconds = timed(train_x, train_y, bs, args.seconds, train_step)
            cells.append(dict(variant=name, mode="train", batch_size=bs, images_per_sec=images / seconds))
        for bs in infer_sizes:
            model = MyLeNet5(act, pool).eval()

            def infer_step(x, y):
                with torch.no_grad():
                    model(x)

            images, seconds = timed(test_x, test_y, bs, args.seconds, infer_step)
            cells.append(dict(variant=name, mode="infer", batch_size=bs, images_per_sec=images / seconds))
    epoch_seconds = None
    if not args.no_epoch:
        model = MyLeNet5()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()
        started = time.perf_counter()
        order = torch.randperm(train_x.shape[0])
        for s in range(0, train_x.shape[0], 16):
            idx = order[s: s + 16]
            opt.zero_grad()
            loss_fn(model(train_x[idx]), train_y[idx]).backward()
            opt.step()
        with torch.no_grad():
            for s in range(0, test_x.shape[0], 1000):
                model(test_x[s: s + 1000])
        epoch_seconds = time.perf_counter() - started
    report = dict(
        device=f"pytorch {torch.__version__} cpu",
        threads=args.threads,
        cells=cells,
        epoch_seconds=epoch_seconds,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    )
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"device: {report['device']}, {args.threads} threads")
    print(f"{'variant':<12} {'mode':<6} {'batch':>6} {'images/s':>12}")
    for c in cells:
        print(f"{c['variant']:<12} {c['mode']:<6} {c['batch_size']:>6} {c['images_per_sec']:>12.0f}")
    if epoch_seconds is not None:
        print(f"epoch (sigmoid+avg, batch 16, 60000 train images + eval of the test split): {epoch_seconds:.2f} s")
    print(f"peak RSS: {report['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
