#!/usr/bin/env python3
"""Independent PyTorch LLaMA: the oracle for gum_train's forward and backward passes.

Written from the Hugging Face LlamaForCausalLM formulas (RMSNorm, rotate_half RoPE with
default/linear/llama3 frequencies, grouped-query causal attention, SwiGLU MLP, optional
attention biases, tied or separate LM head), in float64 with autograd. It shares no code with
gum_train: it reads a config.json in Hugging Face keys (written by the test with literal values,
every key below required, so that nothing falls back to a default), a safetensors file of
weights (HF names) and a safetensors file of inputs, and writes logits, the loss and every
parameter gradient.

Config keys read: hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads,
head_dim, rms_norm_eps, rope_theta, rope_scaling (null, or {rope_type: linear, factor} or
{rope_type: llama3, factor, low_freq_factor, high_freq_factor, original_max_position_embeddings}),
tie_word_embeddings, attention_bias (q, k, v and o); the other sizes come from the weights.

Inputs file: tokens I32 [B, T]; targets I32 [B, T] (< 0 = ignored); optional positions I32 [B, T]
(RoPE positions, default 0..T-1) and doc_start I32 [B, T] (token t attends to [doc_start, t]).
Output file (F64): "logits" [B*T, V], "loss" [1] = sum of the per-token losses over valid targets,
and "grad.<name>" = d(loss_scale * loss)/d(name) for every weight.

Usage: llama_ref.py --config config.json --weights w.safetensors --inputs in.safetensors
                    --out out.safetensors [--loss-scale S]
"""
import argparse
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_safetensors import read_safetensors, write_safetensors  # noqa: E402

DTYPE = torch.float64


def rope_inverse_frequencies(cfg, head_dim):
    """HF's inv_freq = theta^(-2j/D), with rope_scaling applied (linear or llama3)."""
    theta = cfg["rope_theta"]
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=DTYPE) / head_dim))
    scaling = cfg["rope_scaling"] or {}
    kind = scaling.get("rope_type", "default")
    if kind == "linear":
        return inv_freq / scaling["factor"]
    if kind == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        context = scaling["original_max_position_embeddings"]
        wavelength = 2 * math.pi / inv_freq
        long_waves = wavelength > context / low
        short_waves = wavelength < context / high
        smooth = (context / wavelength - low) / (high - low)
        blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        result = torch.where(long_waves, inv_freq / factor, blended)
        return torch.where(short_waves, inv_freq, result)
    if kind != "default":
        raise ValueError(f"unsupported rope_scaling type {kind}")
    return inv_freq


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rms_norm(x, weight, eps):
    variance = x.pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


def linear(x, weights, prefix, use_bias):
    y = x @ weights[prefix + ".weight"].t()
    if use_bias:
        y = y + weights[prefix + ".bias"]
    return y


def attention_mask(doc_start, seq_len):
    """Boolean [B, 1, T, T]: query t may read key u when doc_start[t] <= u <= t."""
    query = torch.arange(seq_len)[:, None]
    key = torch.arange(seq_len)[None, :]
    causal = key <= query
    in_document = key[None, :, :] >= doc_start[:, :, None].long()
    return (causal[None] & in_document)[:, None]


def forward(cfg, weights, tokens, positions, doc_start):
    B, T = tokens.shape
    C = cfg["hidden_size"]
    H = cfg["num_attention_heads"]
    KV = cfg["num_key_value_heads"]
    D = cfg["head_dim"]
    eps = cfg["rms_norm_eps"]
    use_bias = cfg["attention_bias"]

    inv_freq = rope_inverse_frequencies(cfg, D)
    angles = positions.to(DTYPE)[:, :, None] * inv_freq[None, None, :]  # [B, T, D/2]
    angles = torch.cat((angles, angles), dim=-1)
    cos, sin = angles.cos()[:, None], angles.sin()[:, None]  # [B, 1, T, D]
    mask = attention_mask(doc_start, T)

    h = weights["model.embed_tokens.weight"][tokens.long()]
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        x = rms_norm(h, weights[p + "input_layernorm.weight"], eps)
        q = linear(x, weights, p + "self_attn.q_proj", use_bias).view(B, T, H, D).transpose(1, 2)
        k = linear(x, weights, p + "self_attn.k_proj", use_bias).view(B, T, KV, D).transpose(1, 2)
        v = linear(x, weights, p + "self_attn.v_proj", use_bias).view(B, T, KV, D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        # Grouped-query attention: query head h reads kv head h // (H / KV).
        k = k.repeat_interleave(H // KV, dim=1)
        v = v.repeat_interleave(H // KV, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(D)
        scores = scores.masked_fill(~mask, float("-inf"))
        attn = torch.softmax(scores, dim=-1) @ v
        attn = attn.transpose(1, 2).reshape(B, T, H * D)
        h = h + linear(attn, weights, p + "self_attn.o_proj", use_bias)
        x = rms_norm(h, weights[p + "post_attention_layernorm.weight"], eps)
        gate = x @ weights[p + "mlp.gate_proj.weight"].t()
        up = x @ weights[p + "mlp.up_proj.weight"].t()
        h = h + (torch.nn.functional.silu(gate) * up) @ weights[p + "mlp.down_proj.weight"].t()
    h = rms_norm(h, weights["model.norm.weight"], eps)
    head = weights["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else weights["lm_head.weight"]
    return (h @ head.t()).reshape(B * T, -1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--loss-scale", type=float, default=1.0)
    args = parser.parse_args()

    with open(args.config) as f:
        cfg = json.load(f)
    raw_weights, _ = read_safetensors(args.weights)
    weights = {name: t.to(DTYPE).requires_grad_(True) for name, t in raw_weights.items()}
    inputs, _ = read_safetensors(args.inputs)
    tokens, targets = inputs["tokens"], inputs["targets"]
    B, T = tokens.shape
    positions = inputs.get("positions", torch.arange(T, dtype=torch.int32).expand(B, T))
    doc_start = inputs.get("doc_start", torch.zeros(B, T, dtype=torch.int32))

    logits = forward(cfg, weights, tokens, positions, doc_start)
    flat_targets = targets.reshape(-1).long()
    valid = flat_targets >= 0
    log_probs = torch.log_softmax(logits, dim=-1)
    picked = log_probs[torch.arange(B * T), flat_targets.clamp(min=0)]
    loss = -(picked * valid.to(DTYPE)).sum()
    (loss * args.loss_scale).backward()

    out = {"logits": logits.detach(), "loss": loss.detach().reshape(1)}
    for name, w in weights.items():
        out["grad." + name] = w.grad if w.grad is not None else torch.zeros_like(w)
    write_safetensors(args.out, out)


if __name__ == "__main__":
    main()
