#!/usr/bin/env bash
# Tokens per second of one training step (forward, backward, AdamW) on the CPU: gum_train's
# CPU backend against PyTorch (Debian's python3-torch 1.13, fp32, the same threads) on the
# same model, batch and sequence length (configs/llama_tiny.json unless CONFIG is given).
# Usage: scripts/bench_cpu.sh [STEPS] [THREADS] [CONFIG]
# Both sides skip their first 3 steps (allocation, caches) and time the rest.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
steps="${1:-20}"
threads="${2:-$(nproc)}"
config="${3:-configs/llama_tiny.json}"
build="${GUM_BUILD_DIR:-$root/build}"
gum_train="$build/bin/gum_train"
[ -x "$gum_train" ] || "$root/scripts/build.sh"
warmup=3
run_dir=runs/bench_cpu

# gum_train reads real shards: make them once (idempotent, fast when already there).
ls data/corpus/c4-train.*.json.gz > /dev/null 2>&1 || "$root/scripts/make_corpus.sh"
"$gum_train" prepare "$config" > /dev/null

echo "== gum_train (cpu backend, $threads threads)"
"$gum_train" "$config" --resume never \
  --set training.backend=cpu --set training.threads="$threads" --set training.max_steps=$((steps + warmup)) \
  --set eval.at_start=false --set eval.every_steps=0 --set eval.at_end=false \
  --set checkpoint.every_steps=0 --set checkpoint.at_end=false \
  --set logging.every_steps=1 --set logging.run_dir="$run_dir" | tail -n 3

echo "== PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)') (cpu, fp32, $threads threads)"
/usr/bin/python3 - "$run_dir" "$steps" "$threads" "$warmup" <<'PY'
import json, math, sys, time
import torch
import torch.nn as nn
import torch.nn.functional as F

run_dir, steps, threads, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cfg = json.load(open(f"{run_dir}/config.json"))
m, t = cfg["model"], cfg["training"]
torch.set_num_threads(threads)
torch.manual_seed(0)

# A plain LLaMA (RMSNorm, RoPE rotate_half, grouped-query causal attention, SwiGLU), written
# the way a PyTorch user would, without fused kernels: the fair eager-mode baseline.
C, F_, L, H = m["hidden_size"], m["intermediate_size"], m["num_hidden_layers"], m["num_attention_heads"]
KV, D, V = m["num_key_value_heads"], m["head_dim"], m["vocab_size"]
T, B = t["seq_len"], t["batch_size"]

class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__(); self.weight = nn.Parameter(torch.ones(n)); self.eps = eps
    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight

def rotate_half(x):
    return torch.cat((-x[..., D // 2:], x[..., :D // 2]), dim=-1)

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1, self.ln2 = RMSNorm(C, m["rms_norm_eps"]), RMSNorm(C, m["rms_norm_eps"])
        self.q, self.k, self.v = nn.Linear(C, H * D, bias=False), nn.Linear(C, KV * D, bias=False), nn.Linear(C, KV * D, bias=False)
        self.o = nn.Linear(H * D, C, bias=False)
        self.gate, self.up, self.down = nn.Linear(C, F_, bias=False), nn.Linear(C, F_, bias=False), nn.Linear(F_, C, bias=False)
    def forward(self, x, cos, sin, mask):
        h = self.ln1(x)
        q = self.q(h).view(B, T, H, D).transpose(1, 2)
        k = self.k(h).view(B, T, KV, D).transpose(1, 2)
        v = self.v(h).view(B, T, KV, D).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(D) + mask
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(B, T, H * D)
        x = x + self.o(y)
        h = self.ln2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))

class Llama(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(V, C)
        self.blocks = nn.ModuleList(Block() for _ in range(L))
        self.norm = RMSNorm(C, m["rms_norm_eps"])
        self.head = nn.Linear(C, V, bias=False)
        inv_freq = 1.0 / (m["rope_theta"] ** (torch.arange(0, D, 2).float() / D))
        angles = torch.outer(torch.arange(T).float(), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos", angles.cos()); self.register_buffer("sin", angles.sin())
        self.register_buffer("mask", torch.full((T, T), float("-inf")).triu(1))
    def forward(self, tokens, targets):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, self.cos, self.sin, self.mask)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.view(-1, V), targets.view(-1))

model = Llama()
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)
tokens = torch.randint(0, V, (B, T))
targets = torch.randint(0, V, (B, T))
times = []
for step in range(steps + warmup):
    start = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = model(tokens, targets)
    loss.backward()
    opt.step()
    times.append(time.perf_counter() - start)
seconds = sum(times[warmup:])
print(f"pytorch: {steps} steps, {B * T * steps / seconds:.0f} tok/s")
json.dump({"tok_per_s": B * T * steps / seconds}, open(f"{run_dir}/pytorch.json", "w"))
PY

/usr/bin/python3 - "$run_dir" "$warmup" <<'PY'
import json, sys
run_dir, warmup = sys.argv[1], int(sys.argv[2])
records = [json.loads(l) for l in open(f"{run_dir}/metrics.jsonl") if l.strip()]
records = [r for r in records if "loss" in r]
first = next(r for r in records if r["step"] == warmup)
last = records[-1]
gum = (last["tokens"] - first["tokens"]) / (last["elapsed_s"] - first["elapsed_s"])
torch_tps = json.load(open(f"{run_dir}/pytorch.json"))["tok_per_s"]
print(f"gum_train: {last['step'] - warmup} steps, {gum:.0f} tok/s")
print(f"tokens/s gum_train {gum:.0f} | pytorch {torch_tps:.0f} | ratio gum_train/pytorch {gum / torch_tps:.2f}")
PY
