#!/usr/bin/env python3
"""PyTorch autograd oracle for gum_train's transformer ops, one process for all of them.

Reads a safetensors file of inputs named "<op>.<input>" (float32 values, int32 ids) with the
ops' scalar settings in its metadata ("<op>.<key>"), runs each op in float64 the way Hugging
Face's LlamaForCausalLM computes it, back-propagates the given output gradient "<op>.dout", and
writes "<op>.out" and "<op>.grad.<input>" (float64) for every op found in the inputs:

  embedding       tokens, table, dout                out, grad.table
  rmsnorm         x, weight, dout; eps               out, grad.x, grad.weight
  linear          x, weight, bias, dout              out, grad.x, grad.weight, grad.bias
  rope            qkv, positions, dout; n_head, n_kv_head, head_dim, theta
                  (rotate_half on the q and k heads, v unchanged)              out, grad.qkv
  attention*      qkv, dout, optional doc_start; batch, n_head, n_kv_head, head_dim
                  (causal, grouped-query, token t sees [doc_start[t], t])      out, grad.qkv
  swiglu          gate_up, dout                      out, grad.gate_up
  cross_entropy   logits, targets (< 0 ignored); scale
                  out = per-token losses, grad.logits = d(scale * sum(losses))/d(logits)

Usage: llama_ops_ref.py --inputs in.safetensors --out ref.safetensors
"""
import argparse
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_safetensors import read_safetensors, write_safetensors  # noqa: E402

DTYPE = torch.float64


def leaf(t):
    return t.to(DTYPE).clone().requires_grad_()


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def embedding(t, meta):
    table = leaf(t["table"])
    return F.embedding(t["tokens"].long(), table), {"table": table}


def rmsnorm(t, meta):
    x, weight = leaf(t["x"]), leaf(t["weight"])
    variance = x.pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + float(meta["eps"]))), {"x": x, "weight": weight}


def linear(t, meta):
    x, weight, bias = leaf(t["x"]), leaf(t["weight"]), leaf(t["bias"])
    return F.linear(x, weight, bias), {"x": x, "weight": weight, "bias": bias}


def rope(t, meta):
    qkv = leaf(t["qkv"])
    H, KV, D = int(meta["n_head"]), int(meta["n_kv_head"]), int(meta["head_dim"])
    theta = float(meta["theta"])
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=DTYPE) / D))
    angles = torch.outer(t["positions"].to(DTYPE), inv_freq)
    emb = torch.cat((angles, angles), dim=-1)[:, None, :]  # [N, 1, D]
    N = qkv.shape[0]
    qk = qkv[:, : (H + KV) * D].reshape(N, H + KV, D)
    rotated = qk * emb.cos() + rotate_half(qk) * emb.sin()
    return torch.cat((rotated.reshape(N, -1), qkv[:, (H + KV) * D :]), dim=1), {"qkv": qkv}


def attention(t, meta):
    qkv = leaf(t["qkv"])
    B, H, KV, D = int(meta["batch"]), int(meta["n_head"]), int(meta["n_kv_head"]), int(meta["head_dim"])
    N = qkv.shape[0]
    T = N // B
    x = qkv.reshape(B, T, H + 2 * KV, D).transpose(1, 2)  # [B, heads, T, D]
    q, k, v = x[:, :H], x[:, H : H + KV], x[:, H + KV :]
    k = k.repeat_interleave(H // KV, dim=1)  # Hugging Face repeat_kv: query head h reads kv head h // (H/KV)
    v = v.repeat_interleave(H // KV, dim=1)
    scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(D)
    positions = torch.arange(T)
    allowed = positions[None, :] <= positions[:, None]  # [t, u]: causal
    allowed = allowed[None].expand(B, T, T)
    if "doc_start" in t:
        starts = t["doc_start"].long().reshape(B, T)
        allowed = allowed & (positions[None, None, :] >= starts[:, :, None])
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    out = torch.matmul(torch.softmax(scores, dim=-1), v)  # [B, H, T, D]
    return out.transpose(1, 2).reshape(N, H * D), {"qkv": qkv}


def swiglu(t, meta):
    gate_up = leaf(t["gate_up"])
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up, {"gate_up": gate_up}


def cross_entropy(t, meta):
    logits = leaf(t["logits"])
    targets = t["targets"].long()
    valid = targets >= 0
    log_probs = torch.log_softmax(logits, dim=-1)
    picked = log_probs.gather(1, targets.clamp(min=0)[:, None])[:, 0]
    losses = torch.where(valid, -picked, torch.zeros_like(picked))
    return losses, {"logits": logits}


OPS = {
    "embedding": embedding,
    "rmsnorm": rmsnorm,
    "linear": linear,
    "rope": rope,
    "swiglu": swiglu,
    "cross_entropy": cross_entropy,
}


def op_function(name):
    return attention if name.startswith("attention") else OPS[name]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    tensors, metadata = read_safetensors(args.inputs)

    by_op = {}
    for key, value in tensors.items():
        op, name = key.split(".", 1)
        by_op.setdefault(op, {})[name] = value
    results = {}
    for op, inputs in sorted(by_op.items()):
        meta = {k.split(".", 1)[1]: v for k, v in metadata.items() if k.startswith(op + ".")}
        out, leaves = op_function(op)(inputs, meta)
        if op == "cross_entropy":
            (float(meta["scale"]) * out.sum()).backward()
        else:
            out.backward(inputs["dout"].to(DTYPE))
        results[f"{op}.out"] = out.detach()
        for name, tensor in leaves.items():
            results[f"{op}.grad.{name}"] = tensor.grad.detach()
    write_safetensors(args.out, results)


if __name__ == "__main__":
    main()
