#!/usr/bin/env python3
"""Per-step cost of each optimizer on the comparison's setting, refresh timed apart.

  scripts/optimizer_cost.py [--rounds 3] [--steps 40] [--gap 10] [--entries a,b,...]
                            [--shards DIR] [--binary PATH] [--out DIR] [--work DIR]

Every entry of bench/sweeps/compare_tiny.json (its base config, sets and first lr), plus the
randomized-projector variants of galore_adamw and gum, trains --steps steps with one CPU thread,
logging every step; gum_train's metrics.jsonl then holds each step's process CPU time
(step_cpu_ms), the optimizer's (optimizer_cpu_ms) and the projector refreshes' (refresh_cpu_ms),
with wall-clock twins (docs/design.md). The runs are interleaved, entry by entry, --rounds times
(each round starts one entry later), so a change of the machine's load falls on every entry alike.

Projectors refresh every --gap steps in these runs (more refreshes to time than the comparison's
gap gives); the table amortises the measured refresh over K = the comparison's gap and over 200
(the GaLore and GUM papers' default): amortised = step + refresh / K, where step is the median
over the steps without a refresh. Step 1 (allocation, cold caches, the first refresh) is left out.
Each number is the median over the rounds of each run's median, with the rounds' min-max.

Optimizer-state bytes come from each run's final checkpoint (optimizer.safetensors), per
parameter of the model and, for the 28 matrices, per matrix parameter.

--shards: a folder prepared by `gum_train prepare` for the same config (tokenizer.model and the
shards) is copied in instead of building the corpus and training the tokenizer.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import metrics_jsonl  # noqa: E402
import sweep  # noqa: E402

ROOT = sweep.ROOT
SPEC = os.path.join(ROOT, "bench", "sweeps", "compare_tiny.json")
DEFAULT_ENTRIES = ["adamw", "muon", "galore_adamw", "galore_adamw_randomized", "gum", "gum_randomized", "plumage",
                   "stiefel", "stiefel_optimal"]
PAPER_GAP = 200
# Parameter kinds that every optimizer hands to AdamW: the embedding, LM head and norms.
NON_MATRIX_MARKERS = ("embed_tokens", "lm_head", "norm")


def entries_of(spec):
    """label -> --set lines: the spec's optimizers (at their first lr), and randomized variants."""
    entries = {}
    for label, entry in spec["optimizers"].items():
        entries[label] = entry["sets"] + [f"optimizer.lr={entry['lr'][0]}"]
    for label in ("galore_adamw", "gum"):
        if label in entries:
            entries[label + "_randomized"] = entries[label] + ["optimizer.projector=randomized"]
    return entries


def safetensors_header(path):
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        return {k: v for k, v in json.loads(f.read(length)).items() if k != "__metadata__"}


def tensor_bytes(entry):
    return entry["data_offsets"][1] - entry["data_offsets"][0]


def state_bytes(checkpoint):
    """(optimizer-state bytes per parameter, matrix-state bytes per matrix parameter). A state
    tensor belongs to a matrix when its name is the matrix's name and a suffix (exp_avg, ...)."""
    model = safetensors_header(os.path.join(checkpoint, "model.safetensors"))
    matrices = [k for k in model if not any(marker in k for marker in NON_MATRIX_MARKERS)]
    params = sum(tensor_bytes(e) for e in model.values()) / 4  # fp32 weights
    matrix_params = sum(tensor_bytes(model[k]) for k in matrices) / 4
    state = safetensors_header(os.path.join(checkpoint, "optimizer.safetensors"))
    total = sum(tensor_bytes(e) for e in state.values())
    matrix = sum(tensor_bytes(e) for k, e in state.items() if any(k.startswith(m + ".") for m in matrices))
    return total / params, matrix / matrix_params


def summarise_run(metrics_path, gap, has_projector):
    """Per-run medians (ms) of step, optimizer and refresh time, CPU and wall."""
    train, _ = metrics_jsonl.read_metrics(metrics_path, strict=True)
    steps = [r for r in train if r["step"] > 1]

    def refresh_step(r):
        return has_projector and (r["step"] - 1) % gap == 0

    plain = [r for r in steps if not refresh_step(r)]
    refreshes = [r for r in steps if refresh_step(r)]
    out = {}
    for clock, suffix in (("cpu", "_cpu_ms"), ("wall", "_ms")):
        step_key = "step_cpu_ms" if clock == "cpu" else None
        if step_key:
            out[f"step_{clock}"] = statistics.median(r[step_key] for r in plain)
        else:  # wall time of a step from the throughput the trainer logs
            out[f"step_{clock}"] = statistics.median(1e3 * r["tokens"] / r["step"] / r["tok_per_s"] for r in plain)
        out[f"optimizer_{clock}"] = statistics.median(r["optimizer" + suffix] for r in plain)
        out[f"refresh_{clock}"] = statistics.median(r["refresh" + suffix] for r in refreshes) if refreshes else 0.0
    return out


def machine_line():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def run_entry(binary, config_path, work, label, sets, args):
    directory = os.path.join(work, "runs", label)
    shutil.rmtree(directory, ignore_errors=True)
    overrides = list(sets) + [
        f"logging.run_dir={directory}", "training.threads=1", f"training.max_steps={args.steps}",
        "logging.every_steps=1", "eval.at_end=false", "checkpoint.every_steps=0", "checkpoint.at_end=true",
        "checkpoint.keep_last=1"]
    if any(s.startswith("optimizer.update_proj_gap=") for s in sets):
        overrides.append(f"optimizer.update_proj_gap={args.gap}")
    command = ["nice", "-n", "10", binary, config_path, "--resume", "never"]
    for s in overrides:
        command += ["--set", s]
    load_before = os.getloadavg()[0]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sweep.fail(f"{label}: gum_train failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    result = summarise_run(os.path.join(directory, "metrics.jsonl"), args.gap,
                           any(s.startswith("optimizer.update_proj_gap=") for s in sets))
    result["state_per_param"], result["matrix_state_per_matrix_param"] = state_bytes(
        sweep.latest_checkpoint(directory))
    result["load"] = [load_before, os.getloadavg()[0]]
    return result


def cell(values, digits=1):
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def write_report(out_dir, runs, meta, gaps):
    """results.md and results.json. The / adamw columns: *measured*, the entry's median amortised
    step over adamw's median step; *composed*, (common + optimizer + refresh / K) / (common +
    adamw's optimizer), where common is the median over every run of a step less its optimizer
    share: the forward, backward and gradient norm are the same work for every optimizer, and
    composing keeps the machine's run-to-run noise in that part out of the ratio."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"meta": meta, "runs": runs}, f, indent=1)
    median = statistics.median
    common = median(r["step_cpu"] - r["optimizer_cpu"] for rs in runs.values() for r in rs)
    adamw_step = median(r["step_cpu"] for r in runs["adamw"])
    adamw_optimizer = median(r["optimizer_cpu"] for r in runs["adamw"])

    def ratio_cells(rs, gap):
        measured = median(r["step_cpu"] + r["refresh_cpu"] / gap for r in rs) / adamw_step
        optimizer = median(r["optimizer_cpu"] + r["refresh_cpu"] / gap for r in rs)
        return [f"{measured:.3f}", f"{(common + optimizer) / (common + adamw_optimizer):.3f}"]

    lines = [
        "# Optimizer cost per step (CPU)", "",
        f"Command: `{meta['command']}`  ",
        f"Commit: {meta['commit']}  ",
        f"Machine: {meta['machine']}; load average (1 min) {meta['load_min']:.1f} to {meta['load_max']:.1f} "
        f"during the runs; {meta['started']} to {meta['finished']} UTC  ",
        f"Setting: {meta['setting']}", "",
        "Process CPU time (one thread) in ms: the median over the rounds of each run's median, with the "
        "rounds' min-max. *step*: a training step without a refresh; *optimizer*: its optimizer share "
        "(begin_step and the updates); *refresh*: one refresh of every projector; *optimizer, K*: "
        "optimizer + refresh / K. */ adamw*: the amortised step (step + refresh / K) over AdamW's step, "
        "*measured* from the whole steps, *composed* from the optimizer share on the common rest of the "
        f"step ({common:.1f} ms: forward, backward, gradient norm; the median over all runs).", "",
        "| optimizer | step | optimizer | refresh | "
        + " | ".join(f"optimizer, K={g} | / adamw K={g} measured | composed" for g in gaps)
        + " | state B/param | matrix state B/matrix param |",
        "|---" * (6 + 3 * len(gaps)) + "|",
    ]
    for label, rs in runs.items():
        has_refresh = any(r["refresh_cpu"] > 0 for r in rs)
        row = [label, cell([r["step_cpu"] for r in rs]), cell([r["optimizer_cpu"] for r in rs]),
               cell([r["refresh_cpu"] for r in rs]) if has_refresh else "-"]
        for g in gaps:
            row += [cell([r["optimizer_cpu"] + r["refresh_cpu"] / g for r in rs], 2)] + ratio_cells(rs, g)
        row += [f"{rs[-1]['state_per_param']:.2f}", f"{rs[-1]['matrix_state_per_matrix_param']:.2f}"]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Wall clock in ms, same runs (other processes' load is in it):", "",
              "| optimizer | step | optimizer | refresh |", "|---|---|---|---|"]
    for label, rs in runs.items():
        lines.append(f"| {label} | {cell([r['step_wall'] for r in rs])} | {cell([r['optimizer_wall'] for r in rs])} "
                     f"| {cell([r['refresh_wall'] for r in rs])} |")
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--gap", type=int, default=10, help="projector refresh gap of the measuring runs")
    parser.add_argument("--entries", default=",".join(DEFAULT_ENTRIES))
    parser.add_argument("--shards", help="a prepared shard folder to copy instead of preparing")
    parser.add_argument("--binary", default=os.environ.get("GUM_TRAIN", os.path.join(ROOT, "build", "bin", "gum_train")))
    parser.add_argument("--work", default=os.path.join(ROOT, "runs", "optimizer_cost"))
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "optimizer_cost"))
    parser.add_argument("--commit", help="the commit the binary was built from (default: the checkout's HEAD at the start)")
    parser.add_argument("--report-only", action="store_true", help="rewrite results.md from OUT/results.json")
    args = parser.parse_args()
    if args.report_only:
        with open(os.path.join(args.out, "results.json")) as f:
            saved = json.load(f)
        write_report(args.out, saved["runs"], saved["meta"], saved["meta"]["gaps"])
        return

    spec = sweep.load_spec(SPEC, [])
    spec["work_dir"] = args.work
    all_entries = entries_of(spec)
    labels = args.entries.split(",")
    unknown = [label for label in labels if label not in all_entries]
    if unknown:
        sweep.fail(f"unknown entries {unknown}; known: {', '.join(all_entries)}")
    if "adamw" not in labels:
        sweep.fail("the entries must include adamw, the reference of the ratios")
    shard_dir = os.path.join(args.work, "shards")
    if args.shards and not os.path.isdir(shard_dir):
        shutil.copytree(args.shards, shard_dir, ignore=shutil.ignore_patterns("prepare.json"))
    config_path = sweep.prepare_data(spec, args.binary)
    base_sets = [s for s in spec["sets"] if not s.startswith(("training.max_steps=", "logging.every_steps="))]

    started = datetime.datetime.utcnow()
    commit = args.commit or sweep.commit_of_checkout()
    runs = {label: [] for label in labels}
    loads = []
    for round_index in range(args.rounds):
        order = labels[round_index % len(labels):] + labels[:round_index % len(labels)]
        for label in order:
            result = run_entry(args.binary, config_path, args.work, label, base_sets + all_entries[label], args)
            runs[label].append(result)
            loads += result["load"]
            print(f"round {round_index + 1}/{args.rounds} {label}: step {result['step_cpu']:.1f} ms CPU, "
                  f"optimizer {result['optimizer_cpu']:.1f}, refresh {result['refresh_cpu']:.1f}, "
                  f"load {result['load'][0]:.1f}", flush=True)
    gap = next(int(s.split("=")[1]) for s in spec["optimizers"]["galore_adamw"]["sets"]
               if s.startswith("optimizer.update_proj_gap="))
    meta = {
        "command": "scripts/optimizer_cost.py " + " ".join(sys.argv[1:]),
        "commit": commit,
        "machine": machine_line(),
        "load_min": min(loads), "load_max": max(loads),
        "started": started.strftime("%Y-%m-%d %H:%M"),
        "finished": datetime.datetime.utcnow().strftime("%H:%M"),
        "setting": f"{os.path.relpath(SPEC, ROOT)} ({spec['base_config']}, each entry's sets and first lr), {args.steps} steps, "
                   f"training.threads=1, projector refresh every {args.gap} steps, {args.rounds} interleaved rounds",
        "gaps": [gap, PAPER_GAP],
    }
    write_report(args.out, runs, meta, meta["gaps"])


if __name__ == "__main__":
    main()
