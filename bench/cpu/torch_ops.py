#!/usr/bin/python3
"""PyTorch side of the CPU op playground: times the same ops and training step as
gum_bench_cpu_ops, at the shapes it recorded in its JSON, and prints both side by side.

    gum_bench_cpu_ops --model llama_20m --threads 2 --json ours.json
    /usr/bin/python3 bench/cpu/torch_ops.py --ours ours.json [--json combined.json]

Run it with Debian's /usr/bin/python3 (the interpreter that has python3-torch). The thread count
is taken from ours.json (torch.set_num_threads), so both sides use the same number of cores.
Every op is written the way Hugging Face's LlamaForCausalLM computes it in eager mode (RMSNorm in
float32, rotate_half RoPE, repeat_kv + masked softmax attention, SiLU(gate) * up, cross-entropy with
an ignore index); the step is a LLaMA of the same shape with separate q/k/v/gate/up projections
as in Hugging Face, trained by torch.optim.AdamW. Each entry is the median of the timed calls.
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F


def median_ms(body, warmup, repeats, setup=None):
    for _ in range(warmup):
        if setup:
            setup()
        body()
    times = []
    for _ in range(repeats):
        if setup:
            setup()
        begin = time.perf_counter()
        body()
        times.append((time.perf_counter() - begin) * 1e3)
    return statistics.median(times)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rmsnorm(x, weight, eps):
    variance = x.pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


def rope_tables(T, D, theta):
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float32) / D))
    angles = torch.outer(torch.arange(T, dtype=torch.float32), inv_freq)
    emb = torch.cat((angles, angles), dim=-1)
    return emb.cos(), emb.sin()  # [T, D]


def attention(q, k, v, n_head, n_kv):
    """q [B, H, T, D], k/v [B, KV, T, D]: HF eager attention with repeat_kv and a causal mask."""
    B, _, T, D = q.shape
    if n_kv != n_head:
        k = k[:, :, None].expand(B, n_kv, n_head // n_kv, T, D).reshape(B, n_head, T, D)
        v = v[:, :, None].expand(B, n_kv, n_head // n_kv, T, D).reshape(B, n_head, T, D)
    scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(D)
    mask = torch.full((T, T), float("-inf")).triu(1)
    probs = F.softmax(scores + mask, dim=-1, dtype=torch.float32)
    return torch.matmul(probs, v)


class Block(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        C, F_, H, KV, D = c["hidden_size"], c["intermediate_size"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        self.H, self.KV, self.D, self.eps = H, KV, D, c["rms_norm_eps"]
        self.ln1 = torch.nn.Parameter(torch.ones(C))
        self.ln2 = torch.nn.Parameter(torch.ones(C))
        self.q = torch.nn.Linear(C, H * D, bias=False)
        self.k = torch.nn.Linear(C, KV * D, bias=False)
        self.v = torch.nn.Linear(C, KV * D, bias=False)
        self.o = torch.nn.Linear(H * D, C, bias=False)
        self.gate = torch.nn.Linear(C, F_, bias=False)
        self.up = torch.nn.Linear(C, F_, bias=False)
        self.down = torch.nn.Linear(F_, C, bias=False)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        h = rmsnorm(x, self.ln1, self.eps)
        q = self.q(h).view(B, T, self.H, self.D).transpose(1, 2)
        k = self.k(h).view(B, T, self.KV, self.D).transpose(1, 2)
        v = self.v(h).view(B, T, self.KV, self.D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        att = attention(q, k, v, self.H, self.KV).transpose(1, 2).reshape(B, T, self.H * self.D)
        x = x + self.o(att)
        h = rmsnorm(x, self.ln2, self.eps)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Llama(torch.nn.Module):
    def __init__(self, c, T):
        super().__init__()
        self.embed = torch.nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.blocks = torch.nn.ModuleList(Block(c) for _ in range(c["num_hidden_layers"]))
        self.norm = torch.nn.Parameter(torch.ones(c["hidden_size"]))
        self.head = torch.nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)
        if c["tie_word_embeddings"]:
            self.head.weight = self.embed.weight
        self.eps = c["rms_norm_eps"]
        cos, sin = rope_tables(T, c["head_dim"], c["rope_theta"])
        self.register_buffer("cos", cos)
        self.register_buffer("sin", sin)

    def forward(self, tokens, targets):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, self.cos, self.sin)
        logits = self.head(rmsnorm(x, self.norm, self.eps))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1), ignore_index=-1)


def time_op(rows, name, forward, inputs, warmup, repeats):
    """Times forward(*inputs) and the backward of its output(s) against random output gradients."""
    with torch.no_grad():
        forward_ms = median_ms(lambda: forward(*inputs), warmup, repeats)
    out = forward(*inputs)
    outs = out if isinstance(out, tuple) else (out,)
    grads = tuple(torch.randn_like(o) for o in outs)
    backward_ms = median_ms(lambda: torch.autograd.backward(outs, grads, retain_graph=True), warmup, repeats)
    rows[(name, "forward")] = forward_ms
    rows[(name, "backward")] = backward_ms
    print(f"{name:18s} forward  {forward_ms:10.3f} ms   backward {backward_ms:10.3f} ms", flush=True)


def param(*shape, std=1.0):
    return (torch.randn(*shape) * std).requires_grad_()


def bench_ops(c, B, T, warmup, repeats, only):
    C, F_, V, D = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["head_dim"]
    H, KV = c["num_attention_heads"], c["num_key_value_heads"]
    N, W = B * T, (H + 2 * KV) * D
    rows = {}

    def wanted(name):
        return not only or only in name

    if wanted("embedding"):
        tokens = torch.randint(0, V, (N,))
        time_op(rows, "embedding", lambda t, w: F.embedding(t, w), (tokens, param(V, C)), warmup, repeats)
    if wanted("rmsnorm"):
        time_op(rows, "rmsnorm", lambda x, w: rmsnorm(x, w, 1e-6), (param(N, C), param(C)), warmup, repeats)
    for name, fan_in, fan_out in (("linear qkv", C, W), ("linear o", H * D, C), ("linear gate_up", C, 2 * F_),
                                  ("linear down", F_, C), ("linear head", C, V)):
        if wanted(name):
            time_op(rows, name, lambda x, w: F.linear(x, w),
                    (param(N, fan_in), param(fan_out, fan_in, std=fan_in ** -0.5)), warmup, repeats)
    if wanted("rope"):
        cos, sin = rope_tables(T, D, c["rope_theta"])

        def rope(qkv):
            qk = qkv[:, : (H + KV) * D].view(B, T, H + KV, D).transpose(1, 2)
            return qk * cos + rotate_half(qk) * sin

        time_op(rows, "rope", rope, (param(N, W),), warmup, repeats)
    if wanted("attention"):
        def attend(qkv):
            x = qkv.view(B, T, H + 2 * KV, D).transpose(1, 2)
            q, k, v = x[:, :H], x[:, H : H + KV], x[:, H + KV :]
            return attention(q, k, v, H, KV).transpose(1, 2).reshape(N, H * D)

        time_op(rows, "attention", attend, (param(N, W),), warmup, repeats)
    if wanted("swiglu"):
        time_op(rows, "swiglu", lambda g, u: F.silu(g) * u, (param(N, F_), param(N, F_)), warmup, repeats)
    if wanted("cross_entropy"):
        targets = torch.randint(0, V, (N,))
        time_op(rows, "cross_entropy", lambda x: F.cross_entropy(x, targets, ignore_index=-1, reduction="sum"),
                (param(N, V),), warmup, repeats)
    return rows


def bench_model(c, B, T, warmup, repeats, only):
    rows = {}
    torch.manual_seed(0)
    model = Llama(c, T)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    def wanted(name):
        return not only or only in name

    for p in model.parameters():
        p.grad = torch.randn_like(p)
    if wanted("adamw"):
        rows[("adamw", "update")] = median_ms(optimizer.step, warmup, repeats)
        print(f"{'adamw':18s} update   {rows[('adamw', 'update')]:10.3f} ms", flush=True)
    if not wanted("model"):
        return rows
    tokens = torch.randint(0, c["vocab_size"], (B, T))
    targets = torch.roll(tokens, -1, dims=1)
    with torch.no_grad():
        rows[("model", "forward")] = median_ms(lambda: model(tokens, targets), warmup, repeats)
    holder = {}

    def forward_for_backward():
        holder["loss"] = model(tokens, targets)

    rows[("model", "backward")] = median_ms(lambda: holder["loss"].backward(), warmup, repeats, forward_for_backward)

    def step():
        optimizer.zero_grad(set_to_none=False)
        model(tokens, targets).backward()
        optimizer.step()

    rows[("model", "step")] = median_ms(step, warmup, repeats)
    for p in ("forward", "backward", "step"):
        print(f"{'model':18s} {p:8s} {rows[('model', p)]:10.3f} ms", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ours", required=True, help="JSON written by gum_bench_cpu_ops --json")
    parser.add_argument("--json", help="write the combined table here")
    parser.add_argument("--only", default="", help="run only entries whose name contains this")
    args = parser.parse_args()
    with open(args.ours) as f:
        ours = json.load(f)
    torch.set_num_threads(ours["threads"])
    c, B, T = ours["config"], ours["batch"], ours["seq_len"]
    warmup = 2
    print(f"PyTorch {torch.__version__}: {ours['model']}, batch {B}, seq_len {T}, {torch.get_num_threads()} threads")
    torch.manual_seed(0)
    theirs = bench_ops(c, B, T, warmup, ours["repeats"], args.only)
    theirs.update(bench_model(c, B, T, warmup, ours["step_repeats"], args.only))

    table = []
    for row in ours["ops"]:
        key = (row["op"], row["pass"])
        torch_ms = theirs.get(key)
        table.append({"op": row["op"], "pass": row["pass"], "ours_ms": row["ms"], "torch_ms": torch_ms,
                      "ratio": row["ms"] / torch_ms if torch_ms else None})
    print(f"\n{ours['model']} batch {B} seq_len {T}, {ours['threads']} threads (medians; ratio = ours / torch)")
    print(f"| {'op':16s} | {'pass':9s} | {'ours ms':>9s} | {'torch ms':>9s} | {'ratio':>6s} |")
    print(f"|{'-' * 18}|{'-' * 11}|{'-' * 11}|{'-' * 11}|{'-' * 8}|")
    for r in table:
        torch_text = f"{r['torch_ms']:9.3f}" if r["torch_ms"] is not None else f"{'-':>9s}"
        ratio_text = f"{r['ratio']:6.2f}" if r["ratio"] is not None else f"{'-':>6s}"
        print(f"| {r['op']:16s} | {r['pass']:9s} | {r['ours_ms']:9.3f} | {torch_text} | {ratio_text} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": ours["model"], "batch": B, "seq_len": T, "threads": ours["threads"],
                       "torch_version": torch.__version__, "rows": table}, f, indent=2)


if __name__ == "__main__":
    main()
