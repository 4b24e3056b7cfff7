#!/usr/bin/env python3
"""scripts/roofline.py on a tiny model in the emulated CUDA build: the table is printed and labelled
as an estimate, the kernels' traffic is counted, and one kernel's count equals what its arguments
say: AdamW reads the parameter, gradient and two moments and writes the parameter and the moments,
28 bytes per fp32 parameter, plus its 24 bytes of step scalars per launch. gum and galore_adamw
(randomized) with a projector refresh in every counted step and bf16 attention allocate nothing in
a step.
Usage: roofline_check.py SOURCE_DIR GUM_TRAIN SCRATCH_DIR"""
import json, os, shutil, subprocess, sys

src, gum_train, scratch = sys.argv[1:4]
shutil.rmtree(scratch, ignore_errors=True)
os.makedirs(scratch)

C, F, L, H, KV, D, V = 64, 128, 2, 4, 2, 16, 128  # V: the --micro vocabulary
shape_sets = [f"model.hidden_size={C}", f"model.intermediate_size={F}", f"model.num_hidden_layers={L}",
              f"model.num_attention_heads={H}", f"model.num_key_value_heads={KV}", "training.seq_len=16",
              "training.batch_size=4"]


def check(condition, what):
    if not condition:
        sys.exit(f"FAIL: {what}")


def roofline(name, sets):
    """roofline.py on the tiny model with `sets`: its output and the counters of one step."""
    cmd = [sys.executable, os.path.join(src, "scripts", "roofline.py"), gum_train,
           os.path.join(src, "configs", "llama_tiny.json"), "--steps", "1", "--micro", os.path.join(scratch, "micro"),
           "--json", os.path.join(scratch, f"{name}.json")]
    for s in shape_sets + sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    print(proc.stdout + proc.stderr)
    check(proc.returncode == 0, f"roofline.py ({name}) exited {proc.returncode}")
    return proc, json.load(open(os.path.join(scratch, f"{name}.json")))


proc, counters = roofline("adamw", ["optimizer.name=adamw", "training.precision=fp32"])
check(proc.stdout.startswith("ESTIMATE from an emulated run (no GPU)"), "the table is not labelled as an estimate")
for line in ("launches per step:", "launches per step from the host:", "host round trips per step:",
             "device allocations per step:", "moved/req"):
    check(line in proc.stdout, f"the table has no '{line}'")
step, unlogged = counters["logged"], counters["unlogged"]
check(step["accesses_counted"], "the kernels' accesses were not counted (GCC build without ASan needed)")
for name, k in step["kernels"].items():
    required = k["read_bytes"] + k["written_bytes"]
    check(required > 0, f"{name}: no bytes counted")
    # A block loads or stores whole sectors covering every byte it touches.
    check(k["moved_bytes"] >= required, f"{name}: moved {k['moved_bytes']} < required {required}")
check(step["allocations"] == 0, f"{step['allocations']} device allocations in a steady-state step")
check(step["host_syncs"] <= 1, f"{step['host_syncs']} host round trips in a logged step (target <= 1)")
check(unlogged["host_syncs"] == 0, f"{unlogged['host_syncs']} host round trips in an unlogged step (target 0)")
check(unlogged["allocations"] == 0, f"{unlogged['allocations']} device allocations in an unlogged step")
# training.cuda_graphs (auto): each step's forward and backward is one graph launch and AdamW's
# clipped update another (the first step's ran eagerly), so the host launches fewer items than the
# device runs.
device_launches = sum(k["launches"] for k in step["kernels"].values()) + sum(v["calls"] for v in step["library"].values())
check(step["graph_launches"] == 2,
      f"{step['graph_launches']} graph launches in an adamw step of one micro-batch (expected 2: pass, update)")
check(step["host_launches"] < device_launches,
      f"{step['host_launches']} launches from the host for {device_launches} on the device: the graph was not used")

# Untied llama_tiny: embedding and head, per block two norms, q/k/v/o and the three MLP matrices.
params = 2 * V * C + L * (2 * C + 2 * C * H * D + 2 * C * KV * D + 3 * C * F) + C
adam = step["kernels"]["adam_kernel"]
# Each launch also reads the step's lr and two bias corrections (AdamWArgs::step_scalars, 3 doubles).
adam_read = 16 * params + 24 * adam["launches"]
check(adam["read_bytes"] == adam_read, f"adam_kernel read {adam['read_bytes']} bytes, expected {adam_read}")
check(adam["written_bytes"] == 12 * params, f"adam_kernel wrote {adam['written_bytes']} bytes, expected {12 * params}")
# Elementwise over 256-byte aligned tensors: each sector is loaded and stored once per block.
check(adam["moved_bytes"] <= 1.01 * 28 * params, f"adam_kernel moved {adam['moved_bytes']} bytes for {28 * params}")

# A projector refresh in the counted steps (update_proj_gap 1: every step refreshes) and bf16
# activations (attention on fp32 copies): the SVDs, the range finder's QRs and the copies take op
# scratch reserved at start-up, so no step allocates, logged or not.
for optimizer in (["optimizer.name=gum", "optimizer.full_rank_layers=1"],
                  ["optimizer.name=galore_adamw", "optimizer.projector=randomized"]):
    name = optimizer[0].split("=")[1]
    _, refresh = roofline(name, optimizer + ["optimizer.rank=8", "optimizer.update_proj_gap=1",
                                             "training.precision=bf16"])
    kernels = refresh["logged"]["kernels"]
    check("svd_sign_kernel" in kernels, f"{name}: no SVD in the counted step")
    check(("diagonal_signs_kernel" in kernels) == (name == "galore_adamw"), f"{name}: the range finder's QR")
    for kind in ("logged", "unlogged"):
        check(refresh[kind]["allocations"] == 0,
              f"{name}: {refresh[kind]['allocations']} device allocations in a {kind} step with a refresh")
print("roofline check: ok")
