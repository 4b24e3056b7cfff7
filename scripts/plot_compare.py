#!/usr/bin/python3
"""Summarises the runs of scripts/compare_optimizers.sh: one table and one loss-curve figure.

Usage: /usr/bin/python3 scripts/plot_compare.py --runs WORK/runs --out OUT_DIR
                                               --order adamw,muon,... [--meta meta.json]

Each run folder RUNS/NAME holds what gum_train wrote (metrics.jsonl, checkpoints/) plus what the
comparison script added: train.log (the console output) and overrides.txt (its --set lines).
Writes OUT_DIR/results.json, OUT_DIR/results.md and OUT_DIR/loss_curves.png.

Numbers and where they come from:
  final val loss / ppl  the last eval record of metrics.jsonl (the eval at the end of the run)
  train loss            mean of the last 5 logged training losses (one logged step is noisy)
  tokens/s              tokens / elapsed_s of the last training record; elapsed_s counts the
                        training steps only, not evaluation or checkpoint writing
  optimizer state       exact: the tensor bytes of the final checkpoint's optimizer.safetensors
                        (every byte the optimizer keeps between steps); the trainer's start-up
                        memory plan (rounded) is kept next to it as a cross-check
  matrix state          the part of it that belongs to the transformer matrices (moments,
                        momenta, projectors); embedding, head and norms get AdamW in every run
"""
import argparse
import json
import math
import os
import re
import struct
import sys

import matplotlib

matplotlib.use("Agg")  # no display on the build machines
import matplotlib.pyplot as plt

import metrics_jsonl  # scripts/ is on sys.path: it holds this script


def fail(message):
    sys.exit(f"plot_compare.py: {message}")


def read_metrics(path):
    if not os.path.isfile(path):
        fail(f"{path}: missing (did the run start?)")
    try:
        train, evals = metrics_jsonl.read_metrics(path, strict=True)
    except ValueError as e:
        fail(str(e))
    if not train:
        fail(f"{path}: no training records")
    return train, evals


def safetensors_tensor_bytes(path, name_filter=lambda name: True):
    """Sum of the byte ranges of the tensors whose name passes name_filter, read from the header
    (8-byte little-endian length, then JSON)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            fail(f"{path}: truncated safetensors header")
        (header_len,) = struct.unpack("<Q", raw)
        header = json.loads(f.read(header_len))
    total = 0
    for name, entry in header.items():
        if name == "__metadata__" or not name_filter(name):
            continue
        begin, end = entry["data_offsets"]
        total += end - begin
    return total


def is_matrix_state(name):
    """State of the 28 transformer matrices (q/k/v/o/gate/up/down), the part the optimizers
    differ in: model.layers.N.self_attn.q_proj.weight.exp_avg, ....momentum, ....projector."""
    return name.startswith("model.layers.") and "_proj.weight." in name


def final_checkpoint(run_dir):
    checkpoints = os.path.join(run_dir, "checkpoints")
    latest = os.path.join(checkpoints, "latest")
    if not os.path.isfile(latest):
        fail(f"{latest}: missing (the comparison saves a checkpoint at the end of every run)")
    with open(latest) as f:
        return os.path.join(checkpoints, f.read().strip())


PLAN_STATE = re.compile(r"optimizer state\s+([0-9.]+ [KMGT]?i?B)")
PLAN_WEIGHTS = re.compile(r"weights \(f32\)\s+([0-9.]+ [KMGT]?i?B)")


def memory_plan_entries(log_path):
    """The rounded 'optimizer state' and 'weights' rows of the trainer's start-up memory plan."""
    if not os.path.isfile(log_path):
        return None, None
    with open(log_path, errors="replace") as f:
        text = f.read()
    state, weights = PLAN_STATE.search(text), PLAN_WEIGHTS.search(text)
    return (state.group(1) if state else None), (weights.group(1) if weights else None)


def summarise(name, run_dir):
    train, evals = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
    if not evals:
        fail(f"{run_dir}/metrics.jsonl: no eval record (eval.at_end must be on)")
    last_train, last_eval = train[-1], evals[-1]
    if last_eval["step"] != last_train["step"]:
        fail(f"{run_dir}: last eval at step {last_eval['step']} but training ended at step {last_train['step']}")
    tail = [r["loss"] for r in train[-5:]]
    checkpoint = final_checkpoint(run_dir)
    state_bytes = safetensors_tensor_bytes(os.path.join(checkpoint, "optimizer.safetensors"))
    matrix_state_bytes = safetensors_tensor_bytes(os.path.join(checkpoint, "optimizer.safetensors"), is_matrix_state)
    weight_bytes = safetensors_tensor_bytes(os.path.join(checkpoint, "model.safetensors"))
    plan_state, plan_weights = memory_plan_entries(os.path.join(run_dir, "train.log"))
    overrides = []
    overrides_path = os.path.join(run_dir, "overrides.txt")
    if os.path.isfile(overrides_path):
        with open(overrides_path) as f:
            overrides = [line.strip() for line in f if line.strip()]
    return {
        "name": name,
        "run_dir": run_dir,
        "overrides": overrides,
        "steps": last_train["step"],
        "tokens": last_train["tokens"],
        "final_val_loss": last_eval["val_loss"],
        "final_val_ppl": last_eval["val_ppl"],
        "val_tokens": last_eval["val_tokens"],
        "final_train_loss_last5": sum(tail) / len(tail),
        "train_seconds": last_train["elapsed_s"],
        "tokens_per_s": last_train["tokens"] / last_train["elapsed_s"] if last_train["elapsed_s"] > 0 else None,
        "optimizer_state_bytes": state_bytes,
        "matrix_state_bytes": matrix_state_bytes,
        "weight_bytes": weight_bytes,
        "memory_plan_optimizer_state": plan_state,
        "memory_plan_weights": plan_weights,
        "curve": {
            "train": [[r["tokens"], r["loss"]] for r in train],
            "val": [[r["tokens"], r["val_loss"]] for r in evals],
        },
    }


def human_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0


def markdown_table(runs, meta):
    adamw = next((r for r in runs if r["name"] == "adamw"), None)
    lines = []
    if meta:
        lines.append(f"# Optimizer comparison: {meta.get('title', '')}".rstrip(": "))
        lines.append("")
        for key in ("command", "commit", "date", "machine", "model", "data", "budget", "load_note"):
            if key in meta:
                lines.append(f"- **{key}**: {meta[key]}")
        lines.append("")
    lines.append(f"- **run length**: {runs[0]['steps']} steps, {runs[0]['tokens']:,} training tokens per optimizer")
    lines.append("")
    lines.append("| optimizer | final val loss | val ppl | train loss (mean of last 5 logs) | tokens/s "
                 "| optimizer state | matrix state | matrix state / AdamW's | settings (`--set optimizer.*`) |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        ratio = f"{r['matrix_state_bytes'] / adamw['matrix_state_bytes']:.2f}" if adamw else "n/a"
        settings = " ".join(f"`{o.replace('optimizer.', '')}`" for o in r["overrides"] if o.startswith("optimizer."))
        lines.append(
            f"| {r['name']} | {r['final_val_loss']:.4f} | {r['final_val_ppl']:.2f} | {r['final_train_loss_last5']:.4f} "
            f"| {r['tokens_per_s']:.0f} | {r['optimizer_state_bytes']:,} B ({human_bytes(r['optimizer_state_bytes'])}) "
            f"| {r['matrix_state_bytes']:,} B ({human_bytes(r['matrix_state_bytes'])}) | {ratio} | {settings} |")
    lines.append("")
    ranked = sorted(runs, key=lambda r: r["final_val_loss"])
    lines.append("Ranking by final validation loss (lower is better): " +
                 " < ".join(f"{r['name']} ({r['final_val_loss']:.4f})" for r in ranked))
    lines.append("")
    return "\n".join(lines)


def plot(runs, path, title):
    fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(13, 5))
    colors = {}
    for r in runs:
        tokens = [t / 1e6 for t, _ in r["curve"]["train"]]
        # An exponential moving average keeps the curves readable: each logged loss is one batch.
        smoothed, ema = [], None
        for _, loss in r["curve"]["train"]:
            ema = loss if ema is None else 0.7 * ema + 0.3 * loss
            smoothed.append(ema)
        (line,) = ax_train.plot(tokens, smoothed, label=r["name"], linewidth=1.4)
        colors[r["name"]] = line.get_color()
    # The first fifth of training (loss falling from ln(vocab)) would flatten the part that differs.
    tail = [l for r in runs for _, l in r["curve"]["train"][len(r["curve"]["train"]) // 5:]]
    if tail and all(math.isfinite(v) for v in tail):
        ax_train.set_ylim(min(tail) - 0.05, max(tail) + 0.05)
    ax_train.set_xlabel("training tokens (millions)")
    ax_train.set_ylabel("training loss (EMA, weight 0.3 per logged step)")
    ax_train.grid(alpha=0.3)
    ax_train.legend()

    if all(len(r["curve"]["val"]) == 1 for r in runs):
        # Only the final evaluation: one bar per optimizer, best on top.
        ranked = sorted(runs, key=lambda r: r["final_val_loss"], reverse=True)
        values = [r["final_val_loss"] for r in ranked]
        bars = ax_val.barh([r["name"] for r in ranked], values, color=[colors[r["name"]] for r in ranked])
        for bar, value in zip(bars, values):
            ax_val.text(value, bar.get_y() + bar.get_height() / 2, f" {value:.4f}", va="center", fontsize=9)
        spread = max(values) - min(values)
        ax_val.set_xlim(min(values) - max(0.5 * spread, 0.02), max(values) + max(0.35 * spread, 0.02))
        ax_val.set_xlabel(f"final validation loss ({runs[0]['val_tokens']:,} tokens)")
        ax_val.grid(alpha=0.3, axis="x")
    else:
        for r in runs:
            val = r["curve"]["val"]
            ax_val.plot([t / 1e6 for t, _ in val], [l for _, l in val], marker="o", markersize=3,
                        color=colors[r["name"]], label=r["name"], linewidth=1.4)
        ax_val.set_xlabel("training tokens (millions)")
        ax_val.set_ylabel("validation loss")
        ax_val.grid(alpha=0.3)
        ax_val.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="folder holding one run folder per optimizer")
    parser.add_argument("--out", required=True, help="where results.json, results.md, loss_curves.png go")
    parser.add_argument("--order", required=True, help="comma-separated run names, in table order")
    parser.add_argument("--meta", help="JSON object with command, commit, machine, ... for the table's header")
    args = parser.parse_args()

    meta = {}
    if args.meta:
        with open(args.meta) as f:
            meta = json.load(f)
    runs = [summarise(name, os.path.join(args.runs, name)) for name in args.order.split(",") if name]
    if not runs:
        fail("--order names no run")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"meta": meta, "runs": runs}, f, indent=1)
        f.write("\n")
    table = markdown_table(runs, meta)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table)
    steps, tokens = runs[0]["steps"], runs[0]["tokens"]
    title = f"{meta.get('title', 'optimizer comparison')}: {steps} steps, {tokens / 1e6:.2f}M tokens per run"
    plot(runs, os.path.join(args.out, "loss_curves.png"), title)
    print(table)


if __name__ == "__main__":
    main()
