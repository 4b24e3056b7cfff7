#!/usr/bin/python3
"""PyTorch reference of gum_train's optimizers (the oracle of tests/optim).

Written from the papers' formulas (see docs/optimizers.md), independently of the C++ code,
in float64. Random choices are reproduced exactly: Philox4x32-10 (Salmon et al., SC'11) is
re-implemented here, so Gaussian sketches, Haar-Stiefel draws, PLUMAGE's uniform and GUM's
block sampling come from the same (seed, stream, position) as in C++.

The hyperparameters are the papers' defaults written below (DEFAULTS), overridden only by the
literal values the test case lists: nothing is read from gum_train's own config writer, so a
wrong default or a key read into the wrong field on the C++ side shows as a mismatch.

Usage: optim_ref.py run CASE_DIR
CASE_DIR holds case.json (optimizer name, hyperparameter overrides, parameter table, seed,
per-step lr), init.bin (every parameter, float32 little-endian, in table order) and grads.bin
(the gradients of every step, same layout). Writes result.bin (the parameters after the last
step) and the optimizer state under the C++ names: state.json ([name, shape] in order) and
state.bin (float32, concatenated).
"""
import json
import math
import os
import sys

import numpy as np
import torch

torch.set_default_dtype(torch.float64)
MASK32 = 0xFFFFFFFF

# The papers' defaults (docs/optimizers.md): AdamW (Loshchilov & Hutter) betas and eps, Muon's
# momentum 0.95 with Nesterov, 5 Newton-Schulz steps and the original shape scale, GaLore's
# rank 128, period 200 and alpha 0.25, GUM's gamma = 2 layer blocks.
DEFAULTS = {
    "lr": 1e-3,
    "weight_decay": 0.0,
    "beta1": 0.9,
    "beta2": 0.999,
    "eps": 1e-8,
    "adamw_lr": -1.0,
    "momentum": 0.95,
    "nesterov": True,
    "ns_steps": 5,
    "muon_scale": "original",
    "rank": 128,
    "update_proj_gap": 200,
    "scale": 0.25,
    "projector": "svd",
    "power_iterations": 1,
    "oversampling": 8,
    "full_rank_layers": 2,
    "sample_unit": "layer",
    "gum_sampling": "fixed",
    "momentum_restart": True,
    "stiefel_sampling": "haar",
    "stiefel_covariance": "period",
}


def config_from(overrides):
    unknown = set(overrides) - set(DEFAULTS)
    assert not unknown, f"unknown hyperparameters {sorted(unknown)}"
    return {**DEFAULTS, **overrides}

# ---------------------------------------------------------------- Philox4x32-10


def philox4x32(seed, stream, blocks):
    """Vectorised Philox4x32-10 over an array of 64-bit block counters; returns 4 uint64 arrays."""
    blocks = np.asarray(blocks, dtype=np.uint64)
    c0 = blocks & np.uint64(MASK32)
    c1 = blocks >> np.uint64(32)
    c2 = np.full_like(blocks, stream & MASK32)
    c3 = np.full_like(blocks, (stream >> 32) & MASK32)
    k0, k1 = seed & MASK32, (seed >> 32) & MASK32
    for _ in range(10):
        p0 = np.uint64(0xD2511F53) * c0
        p1 = np.uint64(0xCD9E8D57) * c2
        hi0, lo0 = p0 >> np.uint64(32), p0 & np.uint64(MASK32)
        hi1, lo1 = p1 >> np.uint64(32), p1 & np.uint64(MASK32)
        c0, c1, c2, c3 = hi1 ^ c1 ^ np.uint64(k0), lo1, hi0 ^ c3 ^ np.uint64(k1), lo0
        k0 = (k0 + 0x9E3779B9) & MASK32
        k1 = (k1 + 0xBB67AE85) & MASK32
    return c0, c1, c2, c3


def bits_to_uniform(bits):
    return ((bits >> np.uint64(8)).astype(np.float32) + np.float32(0.5)) * np.float32(1.0 / 16777216.0)


def philox_normal(seed, stream, count):
    """Elements 0..count-1 of the standard normal stream (Box-Muller on lane pairs), float32."""
    index = np.arange(count, dtype=np.uint64)
    lanes = np.stack(philox4x32(seed, stream, index >> np.uint64(2)))  # [4, count]
    pair = (index & np.uint64(2)).astype(np.int64)
    cols = np.arange(count)
    u1 = bits_to_uniform(lanes[pair, cols])
    u2 = bits_to_uniform(lanes[pair + 1, cols])
    radius = np.sqrt(np.float32(-2.0) * np.log(u1)).astype(np.float32)
    angle = (np.float32(6.2831853071795864769) * u2).astype(np.float32)
    odd = (index & np.uint64(1)).astype(bool)
    return np.where(odd, radius * np.sin(angle), radius * np.cos(angle)).astype(np.float32)


class PhiloxStream:
    def __init__(self, seed, stream):
        self.seed, self.stream, self.position = seed, stream, 0

    def next_u32(self):
        lanes = philox4x32(self.seed, self.stream, [self.position >> 2])
        value = int(lanes[self.position & 3][0])
        self.position += 1
        return value

    def next_u64(self):
        hi = self.next_u32()
        return (hi << 32) | self.next_u32()

    def next_below(self, n):
        top = (1 << 64) - 1
        limit = top - top % n
        while True:
            x = self.next_u64()
            if x < limit:
                return x % n

    def next_uniform(self):
        return ((self.next_u64() >> 11) + 0.5) * (1.0 / 9007199254740992.0)


def gaussian(seed, stream, rows, cols):
    return torch.from_numpy(philox_normal(seed, stream, rows * cols).astype(np.float64)).reshape(rows, cols)


def refresh_stream(index, step):
    return ((index + 1) << 32) | (step & MASK32)


# ---------------------------------------------------------------- linear algebra


def svd_normalised(a):
    """Thin SVD with the backend's sign rule: the largest-magnitude entry of each U column is positive."""
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    idx = u.abs().argmax(dim=0)
    signs = torch.sign(u[idx, torch.arange(u.shape[1])])
    signs[signs == 0] = 1
    return u * signs, s, vh * signs[:, None]


def qr_normalised(a):
    q, r = torch.linalg.qr(a)
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1
    return q * signs


def newton_schulz(u, steps):
    """Muon's quintic Newton-Schulz iteration (Keller Jordan 2024), (a, b, c) = (3.4445, -4.7750, 2.0315)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = u / (u.norm() + 1e-7)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        poly = b * gram + c * gram @ gram
        x = a * x + poly @ x
    return x.T if tall else x


def muon_scale(mode, m, n):
    return 0.2 * math.sqrt(max(m, n)) if mode == "match_adamw" else math.sqrt(max(1.0, m / n))


class Side:
    """GaLore's projection on the smaller side of W [m, n]: P [d, r] with orthonormal columns."""

    def __init__(self, m, n, r):
        self.m, self.n, self.r = m, n, r
        self.left = m < n
        self.d = m if self.left else n

    def project(self, p, g):
        return p.T @ g if self.left else g @ p

    def back(self, p, x):
        return p @ x if self.left else x @ p.T

    def op(self, g):  # maps the large side to the small one
        return g if self.left else g.T


def top_r_projector(side, g, config, seed, stream):
    r = side.r
    if config["projector"] == "randomized":
        # Halko-Martinsson-Tropp range finder with re-orthonormalised power iterations.
        k = min(r + max(0, config["oversampling"]), side.d)
        big = side.n if side.left else side.m
        a = side.op(g)
        omega = gaussian(seed, stream, big, k)
        y = a @ omega
        for _ in range(config["power_iterations"]):
            q = qr_normalised(y)
            y = a @ (a.T @ q)
        q = qr_normalised(y)
        _, _, vct = svd_normalised(a.T @ q)
        return q @ vct[:r, :].T
    u, s, vh = svd_normalised(g)
    return u[:, :r] if side.left else vh[:r, :].T


def plumage_probabilities(sigma, r):
    sigma = [float(np.float32(x)) for x in sigma]
    d = len(sigma)
    p = [0.0] * d
    if sum(1 for x in sigma if x > 0 and math.isfinite(x)) <= r:
        return [1.0 if i < r else 0.0 for i in range(d)]
    for k in range(r):
        tail = 0.0
        for i in range(k, d):
            tail += sigma[i]
        c = (r - k) / tail
        if c * sigma[k] <= 1.0:
            return [1.0 if i < k else min(1.0, c * sigma[i]) for i in range(d)]
    raise RuntimeError("water-filling failed")


def systematic_sample(p, u):
    r = round(sum(p))
    chosen, cumulative, point = [], 0.0, u
    for i, pi in enumerate(p):
        if len(chosen) >= r:
            break
        cumulative += pi
        if point < cumulative:
            chosen.append(i)
            point += 1.0
    while len(chosen) < r:
        rest = [i for i in range(len(p)) if i not in chosen]
        chosen.append(max(rest, key=lambda i: (p[i], -i)))
    return sorted(chosen)


# ---------------------------------------------------------------- optimizers


class Param:
    def __init__(self, spec, value):
        self.name = spec["name"]
        self.shape = spec["shape"]
        self.kind = spec["kind"]
        self.layer = spec["layer"]
        self.weight_decay = spec["weight_decay"]
        self.value = value
        self.state = {}

    @property
    def matrix(self):
        return self.kind == "matrix"


def adamw(param, grad, lr, cfg, step, wd=None):
    st = param.state
    if "exp_avg" not in st:
        st["exp_avg"] = torch.zeros_like(grad)
        st["exp_avg_sq"] = torch.zeros_like(grad)
    direction = adam_direction(st, grad, cfg, step)
    decay = (cfg["weight_decay"] if param.weight_decay else 0.0) if wd is None else wd
    param.value = param.value - lr * (direction + decay * param.value)


def adam_direction(st, grad, cfg, step, prefix="exp_avg"):
    b1, b2, eps = cfg["beta1"], cfg["beta2"], cfg["eps"]
    m = st[prefix] = b1 * st[prefix] + (1 - b1) * grad
    v = st[prefix + "_sq"] = b2 * st[prefix + "_sq"] + (1 - b2) * grad * grad
    mhat = m / (1 - b1**step)
    vhat = v / (1 - b2**step)
    return mhat / (vhat.sqrt() + eps)


def decay_factor(param, cfg, lr):
    return 1 - lr * cfg["weight_decay"] if param.weight_decay else 1.0


def other_lr(cfg, lr, ratio):
    return lr if cfg["adamw_lr"] < 0 else cfg["adamw_lr"] * ratio


class Reference:
    def __init__(self, case, params):
        overrides = dict(case["overrides"])
        self.name = overrides.pop("name")
        self.cfg = config_from(overrides)
        self.seed = case["seed"]
        self.params = params
        if self.name in ("gum", "galore_muon"):
            self.setup_gum()

    # ---- GUM: blocks, sampling, periods
    def setup_gum(self):
        cfg = self.cfg
        layers = sorted({p.layer for p in self.params if p.matrix})
        self.block = {}
        count = 0
        for i, p in enumerate(self.params):
            if p.matrix:
                self.block[i] = count if cfg["sample_unit"] == "matrix" else layers.index(p.layer)
                count += 1
        self.num_blocks = count if cfg["sample_unit"] == "matrix" else len(layers)
        self.gamma = cfg["full_rank_layers"] if self.name == "gum" else 0
        self.q = self.gamma / self.num_blocks
        self.sampler = PhiloxStream(self.seed, 0x47554D5341)
        self.full = set()
        self.period_started = False

    def begin_step(self, step):
        if self.name not in ("gum", "galore_muon"):
            return
        if not self.period_started or (step - 1) % self.cfg["update_proj_gap"] == 0:
            self.period_started = True
            if self.name == "gum" and self.cfg["gum_sampling"] == "bernoulli":
                # Each block full-rank independently with probability q, one uniform per block.
                self.full = {b for b in range(self.num_blocks) if self.sampler.next_uniform() < self.q}
            else:
                order = list(range(self.num_blocks))
                for j in range(self.gamma):
                    pick = j + self.sampler.next_below(self.num_blocks - j)
                    order[j], order[pick] = order[pick], order[j]
                self.full = set(order[: self.gamma])
            self.pending = {i for i, p in enumerate(self.params) if p.matrix}

    def update(self, i, grad, step, lr, ratio):
        p, cfg = self.params[i], self.cfg
        if self.name == "adamw":
            return adamw(p, grad, lr, cfg, step)
        if not p.matrix:
            return adamw(p, grad, other_lr(cfg, lr, ratio), cfg, step)
        getattr(self, "update_" + ("gum" if self.name == "galore_muon" else self.name))(i, p, grad, step, lr)

    def update_muon(self, i, p, g, step, lr):
        st, mu = p.state, self.cfg["momentum"]
        st["momentum_buffer"] = mu * st.get("momentum_buffer", torch.zeros_like(g)) + g
        u = g + mu * st["momentum_buffer"] if self.cfg["nesterov"] else st["momentum_buffer"]
        o = newton_schulz(u, self.cfg["ns_steps"])
        s = muon_scale(self.cfg["muon_scale"], *p.shape)
        p.value = decay_factor(p, self.cfg, lr) * p.value - lr * s * o

    def update_galore_adamw(self, i, p, g, step, lr):
        self.projected_adam(i, p, g, step, lr, "top_r")

    def update_plumage(self, i, p, g, step, lr):
        self.projected_adam(i, p, g, step, lr, "plumage")

    def update_stiefel(self, i, p, g, step, lr):
        self.projected_adam(i, p, g, step, lr, "stiefel")

    def projected_adam(self, i, p, g, step, lr, estimator):
        cfg, st = self.cfg, p.state
        side = Side(p.shape[0], p.shape[1], cfg["rank"])
        optimal = estimator == "stiefel" and cfg["stiefel_sampling"] == "optimal"
        if optimal and cfg["stiefel_covariance"] == "period":
            st["covariance"] = st.get("covariance", 0) + side.op(g) @ side.op(g).T
        if (step - 1) % cfg["update_proj_gap"] == 0 or "projector" not in st:
            stream = refresh_stream(i, step)
            if optimal:
                # Eigenbasis of the second-moment estimate, π by water-filling on sqrt(eigenvalues).
                c = st["covariance"] if cfg["stiefel_covariance"] == "period" else side.op(g) @ side.op(g).T
                q, eigenvalues, _ = svd_normalised(c)
                prob = plumage_probabilities(eigenvalues.clamp(min=0).sqrt().tolist(), side.r)
                chosen = systematic_sample(prob, PhiloxStream(self.seed, stream).next_uniform())
                fresh = q[:, chosen]
                fresh_scaled = fresh * torch.tensor([float(np.float32(1.0 / prob[c])) for c in chosen])
                if cfg["stiefel_covariance"] == "period":
                    st["covariance"] = torch.zeros_like(c)
            elif estimator == "top_r":
                fresh = top_r_projector(side, g, cfg, self.seed, stream)
                fresh_scaled = None
            elif estimator == "stiefel" and not optimal:
                fresh = qr_normalised(gaussian(self.seed, stream, side.d, side.r))
                fresh_scaled = None
            else:
                u, s, vh = svd_normalised(g)
                vectors = u if side.left else vh.T
                prob = plumage_probabilities(s.tolist(), side.r)
                chosen = systematic_sample(prob, PhiloxStream(self.seed, stream).next_uniform())
                fresh = vectors[:, chosen]
                inverse = torch.tensor([float(np.float32(1.0 / prob[c])) for c in chosen])
                fresh_scaled = fresh * inverse
            if estimator != "top_r" and "projector" in st:
                # Moments rotated into the new basis: B = P_newᵀ P_old.
                b = fresh.T @ st["projector"]
                if side.left:
                    st["exp_avg"], st["exp_avg_sq"] = b @ st["exp_avg"], (b * b) @ st["exp_avg_sq"]
                else:
                    st["exp_avg"], st["exp_avg_sq"] = st["exp_avg"] @ b.T, st["exp_avg_sq"] @ (b * b).T
            st["projector"] = fresh
            if fresh_scaled is not None:
                st["projector_scaled"] = fresh_scaled
        if estimator == "plumage" or optimal:
            r = side.project(st["projector_scaled"], g)
        elif estimator == "stiefel":
            r = side.project(st["projector"], g) * (side.d / side.r)
        else:
            r = side.project(st["projector"], g)
        if "exp_avg" not in st:
            st["exp_avg"], st["exp_avg_sq"] = torch.zeros_like(r), torch.zeros_like(r)
        n = adam_direction(st, r, cfg, step)
        p.value = decay_factor(p, cfg, lr) * p.value - lr * cfg["scale"] * side.back(st["projector"], n)

    def update_gum(self, i, p, g, step, lr):
        cfg, st = self.cfg, p.state
        side = Side(p.shape[0], p.shape[1], cfg["rank"])
        full = self.block[i] in self.full
        if i in self.pending:
            # A new period: a fresh projector, momentum restarted (only the kind this block uses).
            self.pending.discard(i)
            projector = top_r_projector(side, g, cfg, self.seed, refresh_stream(i, step))
            momentum = torch.zeros_like(side.project(projector, g))
            if not cfg["momentum_restart"] and not full and "momentum" in st:
                # Low-rank in both periods: the momentum P_old R seen through the new projector.
                momentum = side.project(projector, side.back(st["projector"], st["momentum"]))
            p.state = st = {"projector": projector}
            if full:
                st["momentum_full"] = torch.zeros_like(g)
            else:
                st["momentum"] = momentum
        P, beta = st["projector"], cfg["momentum"]
        s = muon_scale(cfg["muon_scale"], p.shape[0], p.shape[1])
        if full:
            st["momentum_full"] = beta * st["momentum_full"] + (g - side.back(P, side.project(P, g))) / self.q
            update = newton_schulz(st["momentum_full"], cfg["ns_steps"])
        else:
            st["momentum"] = beta * st["momentum"] + side.project(P, g) / (1 - self.q)
            update = side.back(P, newton_schulz(st["momentum"], cfg["ns_steps"]))
        p.value = decay_factor(p, cfg, lr) * p.value - lr * s * update


def read_f32(path):
    return np.fromfile(path, dtype="<f4")


def run(case_dir):
    with open(os.path.join(case_dir, "case.json")) as f:
        case = json.load(f)
    specs = case["params"]
    sizes = [int(np.prod(s["shape"])) for s in specs]
    total = sum(sizes)
    init = read_f32(os.path.join(case_dir, "init.bin"))
    grads = read_f32(os.path.join(case_dir, "grads.bin"))
    steps = len(case["lr"])
    assert init.size == total and grads.size == total * steps, "case files do not match case.json"
    offsets = np.cumsum([0] + sizes)
    params = [
        Param(s, torch.from_numpy(init[offsets[i] : offsets[i + 1]].astype(np.float64)).reshape(s["shape"]))
        for i, s in enumerate(specs)
    ]
    ref = Reference(case, params)
    for k in range(steps):
        step = case["first_step"] + k
        ref.begin_step(step)
        base = k * total
        for i in range(len(params)):
            g = grads[base + offsets[i] : base + offsets[i + 1]].astype(np.float64)
            ref.update(i, torch.from_numpy(g).reshape(specs[i]["shape"]), step, case["lr"][k], case["lr_ratio"][k])
    out = np.concatenate([p.value.reshape(-1).numpy() for p in params]).astype("<f4")
    out.tofile(os.path.join(case_dir, "result.bin"))
    index, values = [], []
    for p in params:
        for key, tensor in p.state.items():
            index.append([p.name + "." + key, list(tensor.shape)])
            values.append(tensor.reshape(-1).numpy())
    with open(os.path.join(case_dir, "state.json"), "w") as f:
        json.dump(index, f)
    np.concatenate(values).astype("<f4").tofile(os.path.join(case_dir, "state.bin"))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "run":
        sys.exit(__doc__)
    run(sys.argv[2])
