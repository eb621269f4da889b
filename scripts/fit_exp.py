#!/usr/bin/env python3
"""Fits the polynomial of runner's vectorised exp (src/kernels/activation.rs).

e^r = 1 + r + r^2 P(r) for |r| <= ln 2 / 2, P of degree 4, chosen for the
least maximum relative error of e^r: weighted least squares on Chebyshev
nodes, reweighted by the error until the error levels out (Lawson's
algorithm). Prints P's coefficients as f32, highest power first, and the
error before rounding to f32. Needs numpy:

    python3 scripts/fit_exp.py
"""
import numpy as np

half = np.log(2) / 2
r = np.cos(np.linspace(0, np.pi, 4001)) * half
r = r[np.abs(r) > 1e-4]  # (e^r - 1 - r) / r^2 is 0/0 at r = 0
target = (np.exp(r) - 1 - r) / r**2
# Relative error of e^r = r^2 / e^r times the error in P.
scale = r**2 / np.exp(r)
powers = np.vander(r, 5, increasing=True)
weights = np.ones_like(r)
for _ in range(200):
    w = np.sqrt(weights) * scale
    coeffs, *_ = np.linalg.lstsq(powers * w[:, None], target * w, rcond=None)
    error = (1 + r + r**2 * (powers @ coeffs)) / np.exp(r) - 1
    weights *= np.abs(error)
    weights /= weights.sum()
print("P, highest power first:", ", ".join(str(np.float32(c)) for c in coeffs[::-1]))
print(f"max relative error of e^r before rounding: {np.abs(error).max():.1e}")
