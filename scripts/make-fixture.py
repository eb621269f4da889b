#!/usr/bin/env python3
"""Cut the test fixture from the canonical MNIST files.

    python3 scripts/make-fixture.py ../shared/data/mnist tests/fixtures/mnist

Keeps the first TRAIN training and TEST test images (the IDX header's count
rewritten, the pixels and labels copied byte for byte) and writes them as
gzip with a zeroed timestamp, so the output is the same bytes every time.
"""
import gzip
import hashlib
import struct
import sys
from pathlib import Path

TRAIN, TEST = 5000, 1000
FILES = [
    ("train-images-idx3-ubyte", TRAIN),
    ("train-labels-idx1-ubyte", TRAIN),
    ("t10k-images-idx3-ubyte", TEST),
    ("t10k-labels-idx1-ubyte", TEST),
]


def cut(raw: bytes, keep: int) -> bytes:
    magic, count = struct.unpack(">II", raw[:8])
    dims = magic & 0xFF
    header = 4 + 4 * dims
    item = 1
    for (d,) in struct.iter_unpack(">I", raw[8:header]):
        item *= d
    assert keep <= count, f"asked for {keep} of {count}"
    return raw[:4] + struct.pack(">I", keep) + raw[8:header] + raw[header : header + keep * item]


def main(src: str, dst: str) -> None:
    out = Path(dst)
    out.mkdir(parents=True, exist_ok=True)
    for name, keep in FILES:
        raw = gzip.decompress((Path(src) / f"{name}.gz").read_bytes())
        small = cut(raw, keep)
        (out / f"{name}.gz").write_bytes(gzip.compress(small, compresslevel=9, mtime=0))
        print(f"{name}.gz  {keep:>5} items  raw MD5 {hashlib.md5(small).hexdigest()}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
