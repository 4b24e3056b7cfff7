#!/usr/bin/env bash
# Training throughput benchmark on one GPU: gum_train (cuda backend) against PyTorch doing the
# same work (Hugging Face LlamaForCausalLM + torch.optim.AdamW, bf16 autocast with fp32 master
# weights, eager and torch.compile), for the shapes of llama_60m, llama_350m and llama_1b. Every
# run trains on the embedded corpus (data/corpus, the quickstart's llama_tiny data section and its
# 4096-piece tokenizer), which exists on a fresh machine, so the vocabulary is 4096, not C4's 32000.
# Reports tokens/s, MFU and peak memory, writes one JSON (device, commit, date, every
# measurement) and a summary table into OUT_DIR (default bench/results). See bench/README.md.
# Exit code: 0 when every row ran, 1 when any row failed (a PyTorch row without torch installed
# is "skipped", not failed), 2 for a usage error.
#
# MFU = model FLOPs per token * tokens/s / peak, with
#   model FLOPs per token = 6 * N_matmul + 12 * L * T * (H * D)
# where N_matmul counts every parameter that takes part in a matmul (all parameters minus the
# input embedding table, which is a lookup; with tied embeddings the table stays counted as the
# LM head), and 12 * L * T * (H * D) is attention's QK^T and PV, forward and backward (= 12 L T^2 C
# per sequence of T tokens, C = H * D). This is the same count as gum_train's log. Peak: dense bf16
# 989 TFLOP/s for H100 SXM / H200, 312 for A100 (override with GUM_BENCH_PEAK_TFLOPS); fp32 runs
# are reported against the same bf16 peak so the numbers compare.
#
# Usage: scripts/bench_gpu.sh [OUT_DIR]
#   GUM_BENCH_MODELS   (default "llama_60m llama_350m llama_1b")
#   GUM_BENCH_SEQ_LEN  (default 256, the GaLore papers' sequence length)
#   GUM_BENCH_BATCH    micro-batch in sequences (default: 32 for 60m, 16 for 350m, 8 for 1b)
#   GUM_BENCH_STEPS / GUM_BENCH_WARMUP  timed and untimed steps (default 20 / 5)
#   GUM_BENCH_SET      extra gum_train overrides, "SECTION.KEY=VALUE ..." (space-separated)
#   GUM_BENCH_PREPARE=0  the corpus and shards are already there (skip make_corpus + prepare)
#   GUM_BENCH_BUILD_DIR  where bin/gum_train is (default build-gpu, then build)
#   GUM_BENCH_PYTHON   interpreter with torch >= 2 and transformers (default python3)
#   GUM_BENCH_SKIP_TORCH=1 / GUM_BENCH_SKIP_GUM=1  run one side only
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/bench/results}"
mkdir -p "$out"
build="${GUM_BENCH_BUILD_DIR:-}"
if [ -z "$build" ]; then
  build="$root/build-gpu"
  [ -x "$build/bin/gum_train" ] || build="$root/build"
fi
python="${GUM_BENCH_PYTHON:-python3}"
commit="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"

# The embedded corpus and its shards (the quickstart's data): made here when missing.
if [ "${GUM_BENCH_PREPARE:-1}" != 0 ] && [ "${GUM_BENCH_SKIP_GUM:-0}" != 1 ]; then
  if ! compgen -G "$root/data/corpus/c4-train.*.json.gz" > /dev/null; then
    "$root/scripts/make_corpus.sh" > "$out/make_corpus.log" 2>&1 ||
      { echo "bench_gpu: scripts/make_corpus.sh failed: see $out/make_corpus.log" >&2; exit 1; }
  fi
  (cd "$root" && "$build/bin/gum_train" prepare configs/llama_tiny.json) > "$out/prepare.log" 2>&1 ||
    { echo "bench_gpu: gum_train prepare configs/llama_tiny.json failed: see $out/prepare.log" >&2; exit 1; }
fi

exec "$python" - "$root" "$out" "$build/bin/gum_train" "$commit" <<'EOF'
import datetime, json, os, re, statistics, subprocess, sys, time

root, out_dir, gum_train, commit = sys.argv[1:5]
models = os.environ.get("GUM_BENCH_MODELS", "llama_60m llama_350m llama_1b").split()
seq_len = int(os.environ.get("GUM_BENCH_SEQ_LEN", "256"))
steps = int(os.environ.get("GUM_BENCH_STEPS", "20"))
warmup = int(os.environ.get("GUM_BENCH_WARMUP", "5"))
default_batch = {"llama_60m": 32, "llama_350m": 16, "llama_1b": 8}
extra_sets = os.environ.get("GUM_BENCH_SET", "").split()
# The GaLore presets (src/model/config.cpp): hidden, intermediate, heads, layers; untied, here with
# the embedded corpus's 4096-piece vocabulary (configs/llama_tiny.json).
presets = {
    "llama_20m": (256, 688, 4, 4),
    "llama_60m": (512, 1376, 8, 8),
    "llama_130m": (768, 2048, 12, 12),
    "llama_350m": (1024, 2736, 16, 24),
    "llama_1b": (2048, 5461, 32, 24),
    "llama_7b": (4096, 11008, 32, 32),
}
tiny = json.load(open(os.path.join(root, "configs", "llama_tiny.json")))
VOCAB = tiny["model"]["vocab_size"]

def device_name():
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, check=True).stdout.strip().splitlines()[0]
    except Exception:
        return "unknown"

device = device_name()

def peak_tflops():
    if os.environ.get("GUM_BENCH_PEAK_TFLOPS"):
        return float(os.environ["GUM_BENCH_PEAK_TFLOPS"])
    if "H100" in device or "H200" in device:
        return 989.0
    if "A100" in device:
        return 312.0
    return 0.0

PEAK = peak_tflops()

def flops_per_token(model):
    hidden, inter, heads, layers = presets[model]
    params = 2 * VOCAB * hidden + layers * (4 * hidden * hidden + 3 * hidden * inter + 2 * hidden) + hidden
    matmul_params = params - VOCAB * hidden  # the input embedding is a lookup
    return 6.0 * matmul_params + 12.0 * layers * seq_len * hidden, params

def mfu(model, tok_per_s):
    if PEAK <= 0 or not tok_per_s:
        return None
    return flops_per_token(model)[0] * tok_per_s / (PEAK * 1e12)

UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "kB": 1e3, "MB": 1e6, "GB": 1e9}

def parse_bytes(text):
    m = re.match(r"([0-9.]+)\s*([A-Za-z]+)", text or "")
    if not m or m.group(2) not in UNITS:
        return None
    return int(float(m.group(1)) * UNITS[m.group(2)])

def bench_config(model):
    """The preset's shapes with the quickstart's data section: data that exists on a fresh machine."""
    config = {"model": {"preset": model, "vocab_size": VOCAB}, "data": tiny["data"],
              "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.0}, "schedule": {"type": "constant"},
              "training": {"backend": "cuda", "max_steps": warmup + steps}}
    path = os.path.join(out_dir, f"config_{model}.json")
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
    return path

# The trainer's warning when precision bf16 falls back to fp32 (src/train/trainer.cpp): such a run
# is not a bf16 measurement and is not reported as one.
BF16_IN_FP32 = "this run computes in fp32"

def bench_gum(model, batch, precision):
    entry = {"impl": "gum_train", "mode": "fp32, TF32 GEMMs" if precision == "fp32" else precision,
             "model": model, "batch": batch, "seq_len": seq_len}
    if not os.path.exists(gum_train):
        return dict(entry, status="failed: missing gum_train binary " + gum_train)
    config = bench_config(model)
    run_dir = os.path.join(out_dir, "runs", f"{model}_{precision}")
    cmd = [gum_train, config, "--resume", "never",
           "--set", "training.backend=cuda", "--set", f"training.precision={precision}",
           "--set", f"training.seq_len={seq_len}", "--set", f"training.batch_size={batch}",
           "--set", f"training.micro_batch_size={batch}", "--set", f"training.max_steps={warmup + steps}",
           "--set", "logging.every_steps=1", "--set", f"logging.run_dir={run_dir}",
           "--set", "checkpoint.at_end=false", "--set", "eval.at_start=false", "--set", "eval.at_end=false"]
    for extra in extra_sets:
        cmd += ["--set", extra]
    entry["command"] = " ".join(cmd)
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    with open(os.path.join(out_dir, f"gum_{model}_{precision}.log"), "w") as f:
        f.write(log)
    if proc.returncode != 0:
        last = log.strip().splitlines()[-1] if log.strip() else ""
        return dict(entry, status=f"failed (exit {proc.returncode}): {last[:300]}")
    if precision == "bf16" and BF16_IN_FP32 in log:
        return dict(entry, status="not bf16: this build computes precision bf16 in fp32 (trainer warning), not measured")
    rates = []
    metrics = os.path.join(run_dir, "metrics.jsonl")
    if os.path.exists(metrics):
        with open(metrics) as f:
            records = [json.loads(line) for line in f if line.strip()]
        rates = [r["tok_per_s"] for r in records if "tok_per_s" in r and r.get("step", 0) > warmup]
    if not rates:
        return dict(entry, status=f"failed: no tok_per_s after step {warmup} in {metrics}")
    memory = re.findall(r"\| mem ([0-9.]+ ?[A-Za-z]+) \|", log)
    tok_per_s = statistics.median(rates)
    return dict(entry, status="ok", tok_per_s=tok_per_s, mfu=mfu(model, tok_per_s),
                peak_memory_bytes=parse_bytes(memory[-1]) if memory else None)

def bench_torch(model, batch, compiled):
    entry = {"impl": "pytorch", "mode": "bf16 autocast, " + ("torch.compile" if compiled else "eager"),
             "model": model, "batch": batch, "seq_len": seq_len}
    try:
        import torch
        import torch.nn.functional as F
        import transformers
    except Exception as e:  # not the interpreter with torch 2 + transformers
        return dict(entry, status=f"skipped: no torch/transformers in {sys.executable}: {e}")
    entry["torch"] = torch.__version__
    entry["transformers"] = transformers.__version__
    hidden, inter, heads, layers = presets[model]
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=inter,
                                      num_hidden_layers=layers, num_attention_heads=heads,
                                      num_key_value_heads=heads, max_position_embeddings=max(1024, seq_len),
                                      rms_norm_eps=1e-6, tie_word_embeddings=False)
    try:
        torch.manual_seed(0)
        net = transformers.LlamaForCausalLM(config).cuda()
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.0, fused=True)
        forward = torch.compile(net) if compiled else net
        data = torch.randint(0, VOCAB, (batch, seq_len + 1), device="cuda")
        inputs, targets = data[:, :-1], data[:, 1:]

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = forward(input_ids=inputs).logits
            loss = F.cross_entropy(logits.float().reshape(-1, VOCAB), targets.reshape(-1))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        for _ in range(warmup):
            step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        tok_per_s = batch * seq_len * steps / seconds
        result = dict(entry, status="ok", tok_per_s=tok_per_s, mfu=mfu(model, tok_per_s),
                      peak_memory_bytes=int(torch.cuda.max_memory_allocated()))
    except Exception as e:
        result = dict(entry, status=f"failed: {type(e).__name__}: {str(e)[:300]}")
    # Free this model's memory before the next one (the peak of each run is measured separately).
    net = optimizer = forward = data = inputs = targets = None
    import gc
    gc.collect()
    torch.cuda.empty_cache()
    return result

results = []
for model in models:
    if model not in presets:
        print(f"unknown model {model}; known: {' '.join(presets)}", file=sys.stderr)
        sys.exit(2)
    batch = int(os.environ.get("GUM_BENCH_BATCH", default_batch.get(model, 8)))
    if os.environ.get("GUM_BENCH_SKIP_GUM") != "1":
        for precision in ("fp32", "bf16"):
            results.append(bench_gum(model, batch, precision))
            print(json.dumps(results[-1]), flush=True)
    if os.environ.get("GUM_BENCH_SKIP_TORCH") != "1":
        for compiled in (False, True):
            results.append(bench_torch(model, batch, compiled))
            print(json.dumps(results[-1]), flush=True)

date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
report = {
    "device": device, "commit": commit, "date": date, "seq_len": seq_len, "steps": steps, "warmup": warmup,
    "peak_tflops": PEAK,
    "mfu_formula": "(6 * N_matmul + 12 * L * T * H * D) * tokens_per_s / peak; N_matmul = parameters - input embedding",
    "results": results,
}
slug = re.sub(r"[^A-Za-z0-9]+", "_", device).strip("_") or "gpu"
path = os.path.join(out_dir, f"bench_{slug}_{commit}_{date.replace(':', '')}.json")
with open(path, "w") as f:
    json.dump(report, f, indent=2)

lines = [f"benchmark on {device} (commit {commit}, {date}), seq_len {seq_len}, {steps} timed steps",
         f"{'model':<11} {'impl':<10} {'mode':<30} {'batch':>5} {'tok/s':>10} {'MFU':>7} {'peak mem':>10}  status"]
for r in results:
    tok = f"{r['tok_per_s']:.0f}" if r.get("tok_per_s") else "-"
    m = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else "-"
    mem = f"{r['peak_memory_bytes'] / 2**30:.2f} GiB" if r.get("peak_memory_bytes") else "-"
    lines.append(f"{r['model']:<11} {r['impl']:<10} {r['mode']:<30} {r['batch']:>5} {tok:>10} {m:>7} {mem:>10}  "
                 f"{r['status'][:100]}")
summary = "\n".join(lines)
with open(os.path.join(out_dir, "summary.txt"), "w") as f:
    f.write(summary + "\n")
print(summary)
print("results:", path)
failed = [r for r in results if r["status"].startswith("failed")]
if failed:
    print(f"bench_gpu: {len(failed)} of {len(results)} rows failed", file=sys.stderr)
    sys.exit(1)
EOF
