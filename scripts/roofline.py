#!/usr/bin/env python3
"""Per-step roofline of the CUDA backend from an emulated run: an ESTIMATE, not a measurement.

Runs `gum_train CONFIG` on an emulated CUDA build (GUM_CUDA_EMULATION) for STEPS and STEPS + 1
optimizer steps with GUM_CUDA_EMU_STATS set, and takes the difference: the work of one logged
steady-state step (every step is logged); two more runs logging every 1000 steps give the host
round trips and allocations of an unlogged step. What the emulator counts (tools/cuda_emu/include/
gum_cuda_emu/control.h):
- our kernels: per launch, from their own global loads and stores (tools/cuda_emu/src/access.cpp),
  the bytes moved (per thread block, the distinct 32-byte sectors loaded plus those stored: reuse
  inside a block is free, reuse across blocks is not) and the bytes required (distinct bytes read
  plus distinct bytes written: what the launch's inputs and outputs take); tensor-core FLOPs from
  wmma::mma_sync. Arithmetic on the CUDA cores is not counted.
- cuBLAS: per call, 2 m n k FLOPs per product and the bytes of A, B and C (the shim's arguments).
Estimated time of a row: the larger of its FLOPs at the tensor-core peak and its bytes at the HBM
bandwidth; launch latency and overlap are not modelled.

--micro DIR trains on a small synthetic corpus made in DIR (a 128-piece tokenizer, vocabulary 128)
instead of CONFIG's data, so the table needs no download; the model's shapes are CONFIG's.

Usage: scripts/roofline.py GUM_TRAIN CONFIG [--steps N] [--set KEY=VALUE ...] [--micro DIR] [--json PATH]
"""
import argparse, json, os, subprocess, sys, tempfile

# NVIDIA H100 SXM5 datasheet: BF16 tensor-core 1,979 TFLOP/s with 2:4 sparsity, so 989.5 dense, and
# 3.35 TB/s HBM3. The H200 has the same tensor cores and 4.8 TB/s of HBM3e, so on an H200 the
# memory-bound rows take less than estimated here.
PEAK_FLOPS = 989.5e12
HBM_BYTES_PER_S = 3.35e12
MOVED_TARGET = 1.2  # issue 17: memory-bound kernels move at most 1.2x the bytes they require
# A launch that requires less than this touches a few scalars: its time is launch latency, and
# whole 32-byte sectors make its ratio meaningless, so it is not held to the target.
SCALAR_LAUNCH_BYTES = 1024


MICRO_WORDS = ("the cat sat on a mat and dog ran to house with red door while birds sang in green trees under "
               "blue sky every day people walk along river quiet town morning").split()


def micro_data(gum_train, config, sets, directory):
    """Writes a synthetic corpus in `directory`, prepares its tokenizer and shards; returns the --set
    overrides that point CONFIG at them."""
    os.makedirs(directory, exist_ok=True)
    state = 12345  # a linear congruential generator: the same corpus on every machine
    def next_value():
        nonlocal state
        state = (state * 1664525 + 1013904223) % 2**32
        return state >> 8
    for split, documents in (("train", 600), ("valid", 60)):
        with open(os.path.join(directory, f"{split}.jsonl"), "w") as f:
            for _ in range(documents):
                sentences = [" ".join(MICRO_WORDS[next_value() % len(MICRO_WORDS)] for _ in range(4 + next_value() % 8))
                             for _ in range(2 + next_value() % 4)]
                f.write(json.dumps({"text": ". ".join(sentences) + "."}) + "\n")
    overrides = [f"data.train_files={directory}/train.jsonl", f"data.valid_files={directory}/valid.jsonl",
                 "data.tokenizer_vocab_size=128", "data.tokenizer_model_type=bpe", f"data.shard_dir={directory}/shards",
                 "model.vocab_size=128"]
    cmd = [gum_train, "prepare", config]
    for s in overrides + sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"roofline: {' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return overrides


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


KERNEL_FIELDS = ("launches", "moved_bytes", "read_bytes", "written_bytes", "tensor_flops")
LIBRARY_FIELDS = ("calls", "flops", "bytes")


def diff(a, b):
    """b - a: the counters of one step."""
    def sub(new, old, fields):
        return {f: new.get(f, 0) - old.get(f, 0) for f in fields}
    kernels = {k: sub(v, a["kernels"].get(k, {}), KERNEL_FIELDS) for k, v in b["kernels"].items()}
    library = {k: sub(v, a["library"].get(k, {}), LIBRARY_FIELDS) for k, v in b["library"].items()}
    return {"accesses_counted": b.get("accesses_counted", False),
            "allocations": b["allocations"] - a["allocations"], "frees": b["frees"] - a["frees"],
            "host_syncs": b["host_syncs"] - a["host_syncs"],
            "host_launches": b["host_launches"] - a["host_launches"],
            "graph_launches": b["graph_launches"] - a["graph_launches"],
            "kernels": {k: v for k, v in kernels.items() if v["launches"]},
            "library": {k: v for k, v in library.items() if v["calls"]}}


def estimate_us(flops, nbytes):
    return max(flops / PEAK_FLOPS, nbytes / HBM_BYTES_PER_S) * 1e6


def table(step, title):
    """The roofline table of one step, and the memory-bound kernels that miss the traffic target."""
    counted = step["accesses_counted"]
    rows = []  # (name, launches, GFLOP, MB moved, MB required or None, est. us)
    for name, v in step["library"].items():
        rows.append((name, v["calls"], v["flops"] / 1e9, v["bytes"] / 1e6, None, estimate_us(v["flops"], v["bytes"])))
    for name, v in step["kernels"].items():
        required = v["read_bytes"] + v["written_bytes"]
        rows.append((name, v["launches"], v["tensor_flops"] / 1e9, v["moved_bytes"] / 1e6,
                     required / 1e6 if counted else None, estimate_us(v["tensor_flops"], v["moved_bytes"])))
    rows.sort(key=lambda r: -r[5])
    total_us = sum(r[5] for r in rows)
    kernel_launches = sum(v["launches"] for v in step["kernels"].values())
    library_calls = sum(v["calls"] for v in step["library"].values())
    lines = [f"ESTIMATE from an emulated run (no GPU): {title}",
             f"time of a row: max(FLOPs at {PEAK_FLOPS / 1e12:.1f} TFLOP/s dense bf16 tensor-core, bytes at "
             f"{HBM_BYTES_PER_S / 1e12:.2f} TB/s HBM), H100 SXM5 datasheet; launch latency, overlap and "
             "CUDA-core arithmetic not modelled",
             "moved: per block, distinct 32-byte sectors loaded + stored (cuBLAS: A, B, C); required: distinct "
             "bytes read + written per launch", "",
             f"{'work':<42} {'launches':>8} {'GFLOP':>9} {'MB moved':>9} {'MB req.':>9} {'moved/req':>9} "
             f"{'est. us':>8} {'share':>6}"]
    misses, scalar_kernels = [], []
    for name, launches, gflop, moved, required, us in rows:
        ratio = moved / required if required else None
        share = us / total_us if total_us else 0.0
        lines.append(f"{name:<42} {launches:>8} {gflop:>9.4f} {moved:>9.3f} "
                     f"{(f'{required:.3f}' if required is not None else '-'):>9} "
                     f"{(f'{ratio:.2f}' if ratio is not None else '-'):>9} {us:>8.2f} {share:>6.1%}")
        # Memory-bound: our kernels without tensor-core work (the GEMMs and WMMA kernels are not).
        if ratio is not None and gflop == 0 and required * 1e6 / launches < SCALAR_LAUNCH_BYTES:
            scalar_kernels.append(name)
        elif ratio is not None and gflop == 0 and ratio > MOVED_TARGET:
            misses.append((name, ratio))
    lines += ["", f"estimated step time: {total_us:.2f} us (sum of the rows)",
              f"launches per step: {kernel_launches + library_calls} ({kernel_launches} kernels, "
              f"{library_calls} cuBLAS calls)",
              f"launches per step from the host: {step['host_launches']} (kernels, library calls, copies and "
              f"memsets launched one by one, and {step['graph_launches']} CUDA graph launch(es), whose kernels are "
              "counted above; training.cuda_graphs: a micro-batch's forward and backward, and the update where the "
              "optimizer's can be recorded)",
              f"host round trips per step: {step['host_syncs']} (target <= 1 on a logged step)",
              f"device allocations per step: {step['allocations']}, frees: {step['frees']} (target 0)"]
    if not counted:
        lines.append("kernel bytes NOT counted: this build does not instrument kernel accesses (needs GCC, no ASan)")
    elif misses:
        lines.append(f"memory-bound kernels moving more than {MOVED_TARGET}x the bytes they require: "
                     + ", ".join(f"{n} ({r:.2f}x)" for n, r in sorted(misses, key=lambda m: -m[1])))
    else:
        lines.append(f"every memory-bound kernel moves at most {MOVED_TARGET}x the bytes it requires")
    if counted and scalar_kernels:
        lines.append(f"scalar kernels (under {SCALAR_LAUNCH_BYTES} bytes a launch: latency, not bandwidth), not held "
                     "to the target: " + ", ".join(scalar_kernels))
    return "\n".join(lines), misses


def main():
    p = argparse.ArgumentParser()
    p.add_argument("gum_train")
    p.add_argument("config")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--micro", metavar="DIR", help="train on a synthetic corpus made in DIR")
    p.add_argument("--json", help="also write the step's counters here")
    args = p.parse_args()
    sets = (micro_data(args.gum_train, args.config, args.set, args.micro) if args.micro else []) + args.set
    with tempfile.TemporaryDirectory() as workdir:
        step = diff(run(args.gum_train, args.config, args.steps, sets, workdir),
                    run(args.gum_train, args.config, args.steps + 1, sets, workdir))
        # The first and the last step are always logged: with logging every 1000 steps, step
        # STEPS + 1 of STEPS + 2 is not, and STEPS + 2 minus STEPS + 1 steps is one unlogged step.
        unlogged = diff(run(args.gum_train, args.config, args.steps + 1, sets, workdir, log_every=1000),
                        run(args.gum_train, args.config, args.steps + 2, sets, workdir, log_every=1000))
    title = (f"one logged training step, step {args.steps + 1} minus step {args.steps}; config "
             f"{os.path.basename(args.config)}{' on --micro data' if args.micro else ''} {' '.join(args.set)}").rstrip()
    text, _ = table(step, title)
    print(text)
    print(f"unlogged step: host round trips {unlogged['host_syncs']} (target 0), device allocations "
          f"{unlogged['allocations']}, frees {unlogged['frees']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"logged": step, "unlogged": unlogged}, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
