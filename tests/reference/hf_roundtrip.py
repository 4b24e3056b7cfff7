#!/usr/bin/env python3
"""Hugging Face transformers side of the gum_train round-trip test (tests/model/test_hf_import.cpp).

Run with the venv of tests/reference/setup_hf_venv.sh (Debian's torch 1.13 + transformers 4.46.3):

  hf_roundtrip.py make OUT_ROOT
      For each variant below, writes OUT_ROOT/VARIANT/: a tiny model created by transformers with
      random weights (every parameter drawn, biases and norms included), saved with
      save_pretrained (config.json + model.safetensors), and reference.safetensors holding
      "input_ids" (I64 [B, T]) and transformers' "logits" (F32 [B, T, V]) for them.

  hf_roundtrip.py check DIR [DIR ...]
      Each DIR is a folder gum_train wrote, with gum_logits.safetensors ("input_ids", "logits":
      what gum_train computed). Loads DIR with AutoModelForCausalLM.from_pretrained, requires no
      missing, unexpected or mis-shaped tensors, and compares the logits. Exit code 1 on a mismatch.

Logits agree when max |gum - hf| <= 1e-4 * max |hf| (both fp32 on CPU).
"""
import json
import os
import sys

import torch
import transformers
from safetensors.torch import load_file, save_file

RELATIVE_TOLERANCE = 1e-4
BATCH, SEQ_LEN = 2, 24

COMMON = dict(
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,  # grouped-query attention
    vocab_size=97,
    max_position_embeddings=128,
    rms_norm_eps=1e-5,
    hidden_act="silu",
    attn_implementation="eager",
)

# name -> (config class, model class, config overrides)
VARIANTS = {
    "llama_gqa": (transformers.LlamaConfig, transformers.LlamaForCausalLM, dict(rope_theta=5000.0)),
    "llama_bias_llama3_rope": (
        transformers.LlamaConfig,
        transformers.LlamaForCausalLM,
        dict(
            rope_theta=50000.0,
            attention_bias=True,
            tie_word_embeddings=True,
            rope_scaling=dict(
                rope_type="llama3",
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=16,
            ),
        ),
    ),
    "llama_linear_rope": (
        transformers.LlamaConfig,
        transformers.LlamaForCausalLM,
        dict(rope_scaling=dict(type="linear", factor=4.0), head_dim=32),
    ),
    "mistral": (
        transformers.MistralConfig,
        transformers.MistralForCausalLM,
        dict(rope_theta=1e6, sliding_window=None, num_key_value_heads=1),
    ),
    "qwen2": (
        transformers.Qwen2Config,
        transformers.Qwen2ForCausalLM,
        dict(rope_theta=1e6, use_sliding_window=False, tie_word_embeddings=True),
    ),
}


def randomize(model, seed):
    """Draws every parameter, so zero-initialised biases and unit norms are exercised too."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float32)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.15 * noise)


def logits_of(model, input_ids):
    with torch.no_grad():
        return model(input_ids=input_ids).logits.float().contiguous()


def make(out_root):
    torch.manual_seed(0)
    for index, (name, (config_class, model_class, overrides)) in enumerate(VARIANTS.items()):
        config = config_class(**{**COMMON, **overrides})
        model = model_class(config).eval()
        randomize(model, seed=100 + index)
        out_dir = os.path.join(out_root, name)
        model.save_pretrained(out_dir, safe_serialization=True)
        generator = torch.Generator().manual_seed(200 + index)
        input_ids = torch.randint(0, config.vocab_size, (BATCH, SEQ_LEN), generator=generator)
        save_file(
            {"input_ids": input_ids.to(torch.int64), "logits": logits_of(model, input_ids)},
            os.path.join(out_dir, "reference.safetensors"),
        )
        print(f"made {name}: {model_class.__name__}, {sum(p.numel() for p in model.parameters())} parameters")


def check(dirs):
    failed = False
    for folder in dirs:
        model, info = transformers.AutoModelForCausalLM.from_pretrained(
            folder, output_loading_info=True, attn_implementation="eager", torch_dtype=torch.float32
        )
        model.eval()
        problems = {k: v for k, v in info.items() if v}
        if problems:
            print(f"FAIL {folder}: loading problems {problems}")
            failed = True
            continue
        ours = load_file(os.path.join(folder, "gum_logits.safetensors"))
        theirs = logits_of(model, ours["input_ids"].to(torch.int64))
        scale = theirs.abs().max().item()
        error = (ours["logits"].float() - theirs).abs().max().item()
        status = "ok" if error <= RELATIVE_TOLERANCE * scale else "FAIL"
        failed |= status != "ok"
        print(
            f"{status} {folder}: {type(model).__name__}, max |gum - hf| = {error:.3g}, "
            f"max |hf| = {scale:.3g}, relative {error / scale:.3g}"
        )
    return 1 if failed else 0


def main(argv):
    if len(argv) >= 3 and argv[1] == "make":
        make(argv[2])
        return 0
    if len(argv) >= 3 and argv[1] == "check":
        return check(argv[2:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
