#!/usr/bin/python3
"""Loss curves of one or more gum_train runs into a PNG.

Usage: scripts/plot_metrics.py RUN [RUN ...] [-o loss.png] [--log] [--tokens]
RUN is a run folder (holding metrics.jsonl) or a metrics.jsonl file; each curve is labelled
with its run's folder name. Training loss is drawn as lines, validation loss (eval lines) as
markers on the same axes. Needs Debian's python3-matplotlib (run with /usr/bin/python3).
"""
import argparse
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt

from metrics_jsonl import read_metrics  # scripts/ is on sys.path: it holds this script


def run_label(path):
    folder = os.path.dirname(os.path.abspath(path)) if path.endswith(".jsonl") else os.path.abspath(path)
    return os.path.basename(folder.rstrip("/"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders or metrics.jsonl files")
    parser.add_argument("-o", "--output", default="loss.png", help="PNG to write (default loss.png)")
    parser.add_argument("--log", action="store_true", help="logarithmic loss axis")
    parser.add_argument("--tokens", action="store_true", help="x axis in tokens instead of steps")
    args = parser.parse_args()

    x_key = "tokens" if args.tokens else "step"
    fig, ax = plt.subplots(figsize=(8, 5))
    for run in args.runs:
        path = run if run.endswith(".jsonl") else os.path.join(run, "metrics.jsonl")
        if not os.path.exists(path):
            sys.exit(f"plot_metrics: {path} not found")
        train, valid = read_metrics(path)
        label = run_label(path)
        line = None
        if train:
            (line,) = ax.plot([r[x_key] for r in train], [r["loss"] for r in train], label=f"{label} train")
        if valid:
            color = line.get_color() if line is not None else None
            ax.plot([r[x_key] for r in valid], [r["val_loss"] for r in valid], "o--", color=color,
                    label=f"{label} validation")
    ax.set_xlabel("tokens" if args.tokens else "step")
    ax.set_ylabel("cross-entropy loss (nats)")
    if args.log:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    print(f"plot_metrics: wrote {args.output}")


if __name__ == "__main__":
    main()
