#!/usr/bin/env python3
"""Per-step performance model of the CUDA backend from an emulated run (an ESTIMATE, not a measurement).

Runs `gum_train CONFIG` on an emulated CUDA build (GUM_CUDA_EMULATION) for STEPS and STEPS + 1
optimizer steps with GUM_CUDA_EMU_STATS set, and takes the difference: the work of one logged
steady-state step (every step is logged); two more runs logging every 1000 steps give the host
round trips and allocations of an unlogged step. The emulator counts kernel launches, cuBLAS GEMMs with
their exact FLOPs and operand bytes, device allocations and host round trips
(tools/cuda_emu/include/gum_cuda_emu/control.h). Estimated time: GEMM FLOPs at the dense bf16
tensor-core peak and GEMM bytes at the HBM bandwidth (H200: 989 TFLOP/s, 3.35 TB/s), the larger
of the two per GEMM family. The bytes of our own (memory-bound) kernels are NOT counted: the
emulator does not see their loads and stores, so their rows show launches only.

Usage: scripts/roofline.py GUM_TRAIN CONFIG [--steps N] [--set KEY=VALUE ...]
"""
import argparse, json, os, subprocess, sys, tempfile

PEAK_FLOPS = 989e12  # dense bf16, H100 SXM / H200
HBM_BYTES_PER_S = 3.35e12  # H200 (H100 SXM: 3.35 TB/s as well)


def run(gum_train, config, steps, sets, workdir, log_every=1):
    stats = os.path.join(workdir, f"stats_{steps}_{log_every}.json")
    cmd = [gum_train, config, "--resume", "never", "--set", "training.backend=cuda",
           "--set", f"training.max_steps={steps}", "--set", f"logging.every_steps={log_every}",
           "--set", f"logging.run_dir={workdir}/run_{steps}_{log_every}", "--set", "checkpoint.at_end=false",
           "--set", "checkpoint.every_steps=0", "--set", "eval.at_start=false", "--set", "eval.at_end=false"]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, env=dict(os.environ, GUM_CUDA_EMU_STATS=stats), capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"roofline: {' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    if not os.path.exists(stats):
        sys.exit("roofline: no stats file: is this gum_train an emulated CUDA build (GUM_CUDA_EMULATION)?")
    return json.load(open(stats))


def diff(a, b):
    """b - a for the counters of one step."""
    kernels = {k: b["kernels"][k]["launches"] - a["kernels"].get(k, {}).get("launches", 0) for k in b["kernels"]}
    library = {}
    for k, v in b["library"].items():
        w = a["library"].get(k, {"calls": 0, "flops": 0, "bytes": 0})
        library[k] = {f: v[f] - w[f] for f in ("calls", "flops", "bytes")}
    return {"allocations": b["allocations"] - a["allocations"], "frees": b["frees"] - a["frees"],
            "host_syncs": b["host_syncs"] - a["host_syncs"],
            "kernels": {k: n for k, n in kernels.items() if n}, "library": {k: v for k, v in library.items() if v["calls"]}}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("gum_train")
    p.add_argument("config")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--set", action="append", default=[])
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        step = diff(run(args.gum_train, args.config, args.steps, args.set, workdir),
                    run(args.gum_train, args.config, args.steps + 1, args.set, workdir))
        # The first and the last step are always logged: with logging every 1000 steps, step
        # STEPS + 1 of STEPS + 2 is not, and STEPS + 2 minus STEPS + 1 steps is one unlogged step.
        unlogged = diff(run(args.gum_train, args.config, args.steps + 1, args.set, workdir, log_every=1000),
                        run(args.gum_train, args.config, args.steps + 2, args.set, workdir, log_every=1000))
    lines = ["ESTIMATE from an emulated run (no GPU): one logged training step, step "
             f"{args.steps + 1} minus step {args.steps}; config {os.path.basename(args.config)} "
             + " ".join(args.set),
             f"time at {PEAK_FLOPS / 1e12:.0f} TFLOP/s (dense bf16) and {HBM_BYTES_PER_S / 1e12:.2f} TB/s; "
             "our own kernels' bytes are not counted (launches only)", "",
             f"{'work':<40} {'calls':>7} {'GFLOP':>10} {'MB moved':>10} {'est. us':>9}"]
    total_us = 0.0
    for name, v in sorted(step["library"].items()):
        us = max(v["flops"] / PEAK_FLOPS, v["bytes"] / HBM_BYTES_PER_S) * 1e6
        total_us += us
        lines.append(f"{name:<40} {v['calls']:>7} {v['flops'] / 1e9:>10.4f} {v['bytes'] / 1e6:>10.3f} {us:>9.2f}")
    for name, n in sorted(step["kernels"].items(), key=lambda kv: -kv[1]):
        lines.append(f"{name:<40} {n:>7} {'-':>10} {'n/c':>10} {'-':>9}")
    launches = sum(step["kernels"].values()) + sum(v["calls"] for v in step["library"].values())
    lines += ["", f"GEMM time estimate per step: {total_us:.2f} us (lower bound: the kernels' time is not included)",
              f"launches per step: {launches} ({sum(step['kernels'].values())} kernels, "
              f"{sum(v['calls'] for v in step['library'].values())} cuBLAS calls)",
              f"host round trips per step: {step['host_syncs']} (target <= 1 on a logged step)",
              f"device allocations per step: {step['allocations']}, frees: {step['frees']} (target 0)",
              f"unlogged step: host round trips {unlogged['host_syncs']} (target 0), device allocations "
              f"{unlogged['allocations']}, frees {unlogged['frees']}"]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
