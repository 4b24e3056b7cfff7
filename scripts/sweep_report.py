"""The report of scripts/sweep.py: OUT_DIR/results.json (every finished run and each entry's
summary), results.md (the tables, with the command and commit) and curves.png (training loss of
each entry at its best lr, mean and band over the seeds; selection loss against lr)."""
import datetime
import json
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import sweep  # noqa: E402
import sweep_stats  # noqa: E402


def collect(spec):
    """Per entry: the grid's selection losses, the best lr, and the report-slice summary of the
    finished seeds at the best lr."""
    entries = {}
    for label, entry in spec["optimizers"].items():
        grid = {}
        for lr in entry["lr"]:
            r = sweep.finished_result(spec, label, lr, spec["tune_seed"])
            grid[lr] = r["select_loss"] if r else None
        finished = {lr: v for lr, v in grid.items() if v is not None}
        best, on_edge = sweep_stats.best_lr(finished) if finished else (None, False)
        complete = len(finished) == len(grid)
        runs = []
        if best is not None:
            runs = [r for r in (sweep.finished_result(spec, label, best, s) for s in spec["seeds"]) if r]
        summary = sweep_stats.summarise([r["report_loss"] for r in runs]) if runs else None
        entries[label] = {
            "grid": {sweep.lr_text(lr): loss for lr, loss in grid.items()},
            "grid_complete": complete, "best_lr": best, "best_on_grid_edge": on_edge,
            "seeds": [r["seed"] for r in runs], "report_losses": [r["report_loss"] for r in runs],
            "select_losses": [r["select_loss"] for r in runs], "summary": summary,
            "tokens_per_s": [r["tokens_per_s"] for r in runs],
            "optimizer_state_bytes": runs[0]["optimizer_state_bytes"] if runs else None,
            "tokens": runs[0]["tokens"] if runs else None,
            "curves": [r["curve"] for r in runs],
            "commits": sorted({r["commit"] for r in runs}),
        }
    return entries


def fmt(x, digits=4):
    return "n/a" if x is None else f"{x:.{digits}f}"


def markdown(spec, entries, command):
    slices = json.load(open(os.path.join(spec["work_dir"], "slices", "slices.json")))
    commits = sorted({c for e in entries.values() for c in e["commits"]})
    lines = [
        f"# Optimizer sweep: {os.path.basename(spec['path'])}", "",
        spec.get("description", ""), "",
        f"- command: `{command}` (then `scripts/sweep.py report {spec['path']}`)",
        f"- binary commit(s): {', '.join(commits) if commits else 'n/a'}",
        f"- report written {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC",
        f"- validation split cut at a document end: selection slice {slices['select_tokens']} tokens "
        f"(chooses the lr), report slice {slices['report_tokens']} tokens (every loss below)"
        + (f"; each evaluation reads the first {spec['eval_tokens']} predicted tokens of its slice" if spec["eval_tokens"] else ""),
        f"- seeds {spec['seeds']} (training.seed = data.seed); lr tuned at seed {spec['tune_seed']}, whose "
        "run is reused as one of the seeds", "",
        "## Final loss on the report slice at each entry's best lr", "",
        "| entry | best lr | seeds | mean | std | 95% interval (t) | per seed | tokens/s (median) | optimizer state |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, e in entries.items():
        s = e["summary"]
        best = "n/a" if e["best_lr"] is None else sweep.lr_text(e["best_lr"])
        if e["best_lr"] is not None and not e["grid_complete"]:
            best += " (grid incomplete)"
        if e["best_on_grid_edge"]:
            best += " (grid edge)"
        interval = "n/a" if not s or s["ci_low"] is None else f"[{s['ci_low']:.4f}, {s['ci_high']:.4f}]"
        speeds = sorted(v for v in e["tokens_per_s"] if v)
        median = f"{speeds[len(speeds) // 2]:.0f}" if speeds else "n/a"
        state = "n/a" if e["optimizer_state_bytes"] is None else f"{e['optimizer_state_bytes'] / 2**20:.1f} MiB"
        per_seed = ", ".join(f"{v:.4f}" for v in e["report_losses"]) or "n/a"
        lines.append(f"| {label} | {best} | {len(e['seeds'])} | {fmt(s and s['mean'])} | {fmt(s and s['std'])} | "
                     f"{interval} | {per_seed} | {median} | {state} |")
    grids = sorted({lr for e in spec["optimizers"].values() for lr in e["lr"]})
    lines += ["", f"## Selection-slice loss of the lr grid (seed {spec['tune_seed']}; best in bold)", "",
              "| entry | " + " | ".join(sweep.lr_text(lr) for lr in grids) + " |",
              "|---|" + "---|" * len(grids)]
    for label, e in entries.items():
        cells = []
        for lr in grids:
            value = e["grid"].get(sweep.lr_text(lr), "absent")
            if value == "absent":
                cells.append("")
            elif value is None:
                cells.append("not run")
            else:
                cells.append(f"**{value:.4f}**" if e["best_lr"] == lr else f"{value:.4f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Tokens/s are wall clock on a shared machine: compare them only within a quiet, dedicated run.", ""]
    return "\n".join(lines)


def plot(spec, entries, path):
    figure, (curves, grid_axis) = plt.subplots(1, 2, figsize=(13, 5))
    for label, e in entries.items():
        if not e["curves"]:
            continue
        # The seeds log at the same steps; the band is mean -/+ one standard deviation per step.
        length = min(len(c) for c in e["curves"])
        tokens = [e["curves"][0][i][0] for i in range(length)]
        per_step = [[c[i][1] for c in e["curves"]] for i in range(length)]
        mean = [sum(v) / len(v) for v in per_step]
        std = [math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
               for v, m in zip(per_step, mean)]
        line, = curves.plot(tokens, mean, label=f"{label} (lr {sweep.lr_text(e['best_lr'])}, {len(e['curves'])} seeds)")
        curves.fill_between(tokens, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=line.get_color(), alpha=0.2)
        points = sorted((float(lr), v) for lr, v in e["grid"].items() if v is not None)
        grid_axis.plot([p[0] for p in points], [p[1] for p in points], "o-", color=line.get_color(), label=label)
    curves.set_xlabel("training tokens")
    curves.set_ylabel("training loss (mean, band: +-1 std over seeds)")
    curves.set_ylim(top=7.0)
    curves.legend(fontsize=8)
    curves.grid(alpha=0.3)
    grid_axis.set_xscale("log")
    grid_axis.set_xlabel("learning rate (matrix parameters)")
    grid_axis.set_ylabel(f"final selection-slice loss (seed {spec['tune_seed']})")
    grid_axis.legend(fontsize=8)
    grid_axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(spec, argv):
    entries = collect(spec)
    out = spec["out_dir"]
    os.makedirs(out, exist_ok=True)
    command_path = os.path.join(spec["work_dir"], "command.txt")
    # Every `run` session's command line; the report names them all (a resumed sweep has several).
    command = ("`; `".join(sorted(set(open(command_path).read().split("\n")) - {""}))
               if os.path.isfile(command_path) else "scripts/sweep.py run " + spec["path"])
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(markdown(spec, entries, command))
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"spec": {k: v for k, v in spec.items() if k != "path"}, "spec_path": spec["path"],
                   "command": command, "entries": {k: {**v, "curves": v["curves"]} for k, v in entries.items()}},
                  f, indent=1)
    plot(spec, entries, os.path.join(out, "curves.png"))
    print(f"sweep.py: wrote {out}/results.md, results.json, curves.png")
