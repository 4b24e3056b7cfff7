"""Statistics of scripts/sweep.py: the summary of one setting's seeds (mean, sample standard
deviation, Student-t 95% interval of the mean) and the choice of the best learning rate.
Python standard library only, so the numbers can be checked without SciPy
(scripts/test_sweep_stats.py compares them with published t tables)."""
import math


def student_t_cdf(x, df):
    """P(T <= x) for Student's t with df degrees of freedom. Uses the regularised incomplete beta
    function I_z(df/2, 1/2) with z = df / (df + x^2), evaluated by its continued fraction."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    z = df / (df + x * x)
    tail = 0.5 * regularised_incomplete_beta(z, df / 2.0, 0.5)
    return 1.0 - tail if x >= 0 else tail


def regularised_incomplete_beta(z, a, b):
    """I_z(a, b) by Lentz's continued fraction (Numerical Recipes' betacf), using the symmetry
    I_z(a, b) = 1 - I_{1-z}(b, a) where the fraction converges slowly."""
    if z <= 0.0:
        return 0.0
    if z >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(z) + b * math.log1p(-z)
    if z > (a + 1.0) / (a + b + 2.0):
        return 1.0 - regularised_incomplete_beta(1.0 - z, b, a)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * z / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * z / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * z / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * fraction / a


def student_t_quantile(p, df):
    """The x with student_t_cdf(x, df) = p, by bisection (the CDF is monotone)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {p}")
    low, high = -1.0, 1.0
    while student_t_cdf(low, df) > p:
        low *= 2.0
    while student_t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        if student_t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low < 1e-12 * max(1.0, abs(middle)):
            break
    return 0.5 * (low + high)


def summarise(values, confidence=0.95):
    """n, mean, sample standard deviation (n - 1 in the denominator) and the two-sided Student-t
    interval of the mean, mean -/+ t_{(1+confidence)/2, n-1} * std / sqrt(n). With one value the
    spread is unknown: std and the interval are None."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarise")
    mean = sum(values) / n
    if n == 1:
        return {"n": 1, "mean": mean, "std": None, "ci_low": None, "ci_high": None, "confidence": confidence}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = student_t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half,
            "confidence": confidence}


def best_lr(losses_by_lr):
    """The learning rate with the lowest selection loss, and whether it lies on the edge of the
    grid (then the optimum may lie outside it). Non-finite losses (diverged runs) never win."""
    finite = {lr: loss for lr, loss in losses_by_lr.items() if loss is not None and math.isfinite(loss)}
    if not finite:
        return None, False
    lr = min(finite, key=lambda k: (finite[k], k))
    grid = sorted(losses_by_lr)
    on_edge = len(grid) > 1 and lr in (grid[0], grid[-1])
    return lr, on_edge


def intervals_overlap(a, b):
    """Whether the intervals of two summaries overlap (a coarse 'within noise' flag; None when
    either has a single seed)."""
    if a["ci_low"] is None or b["ci_low"] is None:
        return None
    return a["ci_low"] <= b["ci_high"] and b["ci_low"] <= a["ci_high"]
