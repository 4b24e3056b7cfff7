#!/usr/bin/env python3
"""Checks of scripts/sweep_stats.py against closed forms and published tables (run by CTest as
'scripts: sweep statistics'). Exits non-zero naming the first failed check."""
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sweep_stats  # noqa: E402

failures = []


def check(name, got, want, tolerance):
    if got is None or abs(got - want) > tolerance:
        failures.append(f"{name}: got {got}, want {want} +- {tolerance}")


# Closed forms of the t CDF: df = 1 is the Cauchy distribution, df = 2 has an algebraic CDF.
# The continued fraction converges to about 1e-15; 1e-10 leaves room for rounding.
for x in (-30.0, -2.5, -0.3, 0.0, 0.7, 4.0, 100.0):
    check(f"cdf df=1 x={x}", sweep_stats.student_t_cdf(x, 1), 0.5 + math.atan(x) / math.pi, 1e-10)
    check(f"cdf df=2 x={x}", sweep_stats.student_t_cdf(x, 2), 0.5 + x / (2 * math.sqrt(2 + x * x)), 1e-10)

# Two-sided 95% critical values t_{0.975, df}, as printed (4 decimals) in standard tables; the
# tolerance is the tables' rounding.
table = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 9: 2.2622, 10: 2.2281, 30: 2.0423, 120: 1.9799}
for df, value in table.items():
    check(f"t quantile 0.975 df={df}", sweep_stats.student_t_quantile(0.975, df), value, 5e-5)
check("t quantile 0.95 df=3", sweep_stats.student_t_quantile(0.95, 3), 2.3534, 5e-5)
check("t quantile 0.025 df=4 (symmetry)", sweep_stats.student_t_quantile(0.025, 4), -2.7764, 5e-5)

# summarise: [1, 2, 3] has mean 2, sample std 1 (n - 1), half-width 4.3027 / sqrt(3) at 95%.
s = sweep_stats.summarise([1.0, 2.0, 3.0])
check("mean", s["mean"], 2.0, 1e-12)
check("std", s["std"], 1.0, 1e-12)
check("ci low", s["ci_low"], 2.0 - 4.3027 / math.sqrt(3), 5e-5)
check("ci high", s["ci_high"], 2.0 + 4.3027 / math.sqrt(3), 5e-5)
# Two values: std = |a - b| / sqrt(2), half-width 12.7062 * std / sqrt(2) = 12.7062 * |a - b| / 2.
s = sweep_stats.summarise([5.0, 5.2])
check("two seeds: half-width", s["ci_high"] - s["mean"], 12.7062 * 0.2 / 2, 1e-4)
single = sweep_stats.summarise([4.2])
if single["std"] is not None or single["ci_low"] is not None:
    failures.append(f"one seed must leave std and interval unknown, got {single}")

# best_lr: lowest finite loss; a diverged run (nan, inf) never wins; the edge flag.
lr, edge = sweep_stats.best_lr({0.01: 5.0, 0.02: 4.9, 0.04: float("nan"), 0.005: 5.1})
if (lr, edge) != (0.02, False):
    failures.append(f"best_lr interior: got {(lr, edge)}")
lr, edge = sweep_stats.best_lr({0.01: 5.0, 0.02: 5.1, 0.04: float("inf")})
if (lr, edge) != (0.01, True):
    failures.append(f"best_lr on the edge: got {(lr, edge)}")
if sweep_stats.best_lr({0.01: float("nan")})[0] is not None:
    failures.append("best_lr of only diverged runs must be None")

a, b = sweep_stats.summarise([1.0, 2.0, 3.0]), sweep_stats.summarise([10.0, 10.1, 10.2])
if sweep_stats.intervals_overlap(a, b) is not False or sweep_stats.intervals_overlap(a, a) is not True:
    failures.append("intervals_overlap")

if failures:
    print("\n".join(failures))
    sys.exit(1)
print("sweep statistics: all checks passed")
