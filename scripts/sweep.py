#!/usr/bin/env python3
"""Tuned, multi-seed optimizer comparisons: optimizers x learning-rate grid x seeds, resumable.

  scripts/sweep.py run SPEC.json [--set KEY=VALUE ...] [--binary PATH] [--commit SHA] [--until HH:MM]
                   [--max-runs N]
  scripts/sweep.py report SPEC.json

Protocol (docs/optimizer_comparison.md):
1. tune: every entry of the spec's "optimizers" runs once per learning rate of its grid, at
   "tune_seed".
2. select: each entry's best learning rate is the one with the lowest loss on the *selection*
   slice of the validation split.
3. seeds: each entry runs at its best learning rate once per seed of "seeds" (the tune_seed run
   is reused when tune_seed is one of them).
4. report: the final loss on the *report* slice (disjoint from the selection slice) is summarised
   per entry as mean, standard deviation and Student-t 95% interval over the seeds.

The validation shard is split once into the two slices at the end of a document near its middle
(WORK_DIR/slices/select.bin, report.bin); each finished run is evaluated on both with
`gum_train eval --data`. A seed S sets training.seed = data.seed = S, so the initial weights, the
data order and the optimizer's own random draws all change with it.

Resumable: a run is finished when RUN_DIR/result.json exists, and is then skipped. A run that was
interrupted continues from its newest checkpoint (--resume auto; checkpoints every
"checkpoint_every" steps). SIGINT/SIGTERM stop the current run and exit; `run` again continues.
A run folder whose overrides differ from what the spec now asks is an error, not reused.

Spec (JSON):
  base_config      the trainer config every run starts from
  work_dir         shards, slices and runs (not committed)
  out_dir          results.md, results.json, curves.png (committed)
  sets             KEY=VALUE overrides of every run (--set on the command line appends to these)
  optimizers       {LABEL: {"sets": [...], "lr": [grid]}}; LABEL names the entry (an optimizer, or
                   a variant of one for an ablation)
  tune_seed, seeds, checkpoint_every, threads
  eval_tokens      predicted tokens per slice evaluation (default 0: the whole slice)
  eos_id           only when WORK_DIR/shards was filled by hand (default 2, gum_train's tokenizer)
"""
import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import metrics_jsonl  # noqa: E402
import sweep_stats  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARD_HEADER = struct.Struct("<8sIIQQQQQQ")  # include/gum/data/shard.h


def fail(message):
    sys.exit(f"sweep.py: {message}")


def load_spec(path, extra_sets):
    with open(path) as f:
        spec = json.load(f)
    for key in ("base_config", "work_dir", "out_dir", "optimizers", "seeds", "tune_seed"):
        if key not in spec:
            fail(f"{path}: missing key '{key}'")
    spec.setdefault("sets", [])
    spec["sets"] = list(spec["sets"]) + list(extra_sets)
    spec.setdefault("checkpoint_every", 100)
    spec.setdefault("threads", 0)
    spec.setdefault("eval_tokens", 0)
    for label, entry in spec["optimizers"].items():
        if not entry.get("lr"):
            fail(f"{path}: optimizers.{label} needs a non-empty 'lr' grid")
        entry.setdefault("sets", [])
    spec["path"] = path
    return spec


def lr_text(lr):
    return f"{lr:.6g}"


def run_dir(spec, label, lr, seed):
    return os.path.join(spec["work_dir"], "runs", label, f"lr{lr_text(lr)}_seed{seed}")


def run_overrides(spec, label, lr, seed, directory):
    """The --set lines of one run, in the order they apply (later ones win)."""
    sets = [f"training.threads={spec['threads']}", "eval.at_end=false", "eval.every_steps=0",
            "checkpoint.at_end=true", f"checkpoint.every_steps={spec['checkpoint_every']}",
            "checkpoint.keep_last=1"]
    sets += spec["sets"] + spec["optimizers"][label]["sets"]
    sets += [f"optimizer.lr={lr_text(lr)}", f"training.seed={seed}", f"data.seed={seed}",
             f"logging.run_dir={directory}"]
    return sets


# ---------------------------------------------------------------- data: shards and the two slices
def checksum64(data):
    """src/data/checksum.cpp: four FNV-1a lanes over 64-bit words, tail bytewise, avalanche."""
    mask = (1 << 64) - 1
    prime, offset = 0x100000001B3, 0xCBF29CE484222325

    def avalanche(x):
        x ^= x >> 30
        x = (x * 0xBF58476D1CE4E5B9) & mask
        x ^= x >> 27
        x = (x * 0x94D049BB133111EB) & mask
        return x ^ (x >> 31)

    lanes = [offset, offset ^ 0x9E3779B97F4A7C15, offset ^ 0x3C6EF372FE94F82A, offset ^ 0xDAA66D2C7DDF743F]
    blocks = len(data) // 32
    words = struct.unpack_from(f"<{4 * blocks}Q", data)
    for i in range(0, 4 * blocks, 4):
        for k in range(4):
            lanes[k] = ((lanes[k] ^ words[i + k]) * prime) & mask
    h = offset
    for lane in lanes:
        h = ((h ^ avalanche(lane)) * prime) & mask
    for byte in data[32 * blocks:]:
        h = ((h ^ byte) * prime) & mask
    return avalanche(h ^ len(data))


def write_shard(path, header_fields, tokens, document_count):
    magic, version, width, _, vocab, fingerprint, _, _, reserved = header_fields
    header = SHARD_HEADER.pack(magic, version, width, len(tokens) // width, vocab, fingerprint,
                               checksum64(tokens), document_count, reserved)
    with open(path + ".tmp", "wb") as f:
        f.write(header + bytes(64 - SHARD_HEADER.size) + tokens)
    os.replace(path + ".tmp", path)


def split_validation(valid_path, eos_id, out_dir):
    """Cuts the validation shard after the EOS nearest its middle: select.bin, report.bin."""
    with open(valid_path, "rb") as f:
        raw = f.read()
    fields = SHARD_HEADER.unpack_from(raw)
    width, count = fields[2], fields[3]
    if fields[0] != b"GUMTOKS\0" or width not in (2, 4):
        fail(f"{valid_path}: not a version-1 token shard")
    payload = raw[64:64 + width * count]
    tokens = struct.unpack(f"<{count}{'H' if width == 2 else 'I'}", payload)
    ends = [i + 1 for i, t in enumerate(tokens) if t == eos_id]
    if len(ends) != fields[7] or (ends and ends[-1] != count):
        fail(f"{valid_path}: {len(ends)} tokens of id {eos_id} but {fields[7]} documents each ending in EOS: "
             "wrong eos_id")
    if len(ends) < 2:
        fail(f"{valid_path}: fewer than two documents (eos id {eos_id}); cannot split")
    cut = min(ends[:-1], key=lambda e: abs(e - count // 2))
    os.makedirs(out_dir, exist_ok=True)
    documents_first = ends.index(cut) + 1
    write_shard(os.path.join(out_dir, "select.bin"), fields, payload[:cut * width], documents_first)
    write_shard(os.path.join(out_dir, "report.bin"), fields, payload[cut * width:], len(ends) - documents_first)
    return {"select_tokens": cut, "report_tokens": count - cut, "documents": [documents_first, len(ends) - documents_first]}


def prepare_data(spec, binary):
    """The spec's base config with its shards in WORK_DIR/shards; prepare; the two slices."""
    work = spec["work_dir"]
    os.makedirs(work, exist_ok=True)
    with open(spec["base_config"]) as f:
        config = json.load(f)
    config.setdefault("data", {})["shard_dir"] = os.path.join(work, "shards")
    config_path = os.path.join(work, "config.json")
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)
    slices_json = os.path.join(work, "slices", "slices.json")
    if os.path.isfile(slices_json):
        return config_path
    shard_dir = config["data"]["shard_dir"]
    listing = os.listdir(shard_dir) if os.path.isdir(shard_dir) else []
    if "tokenizer.model" in listing and any(p.startswith("valid_") for p in listing):
        # Shards copied in from a prepare of the same corpus (training the tokenizer takes long
        # on a loaded machine); gum_train's tokenizer training fixes EOS at id 2.
        eos = int(spec.get("eos_id", 2))
    else:
        subprocess.run([os.path.join(ROOT, "scripts", "make_corpus.sh")], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        prepared = subprocess.run([binary, "prepare", config_path], check=True, capture_output=True, text=True)
        found = re.search(r"eos (\d+)", prepared.stdout + prepared.stderr)
        if not found:
            fail("could not read the EOS id from `gum_train prepare`'s output")
        eos = int(found.group(1))
    valid = sorted(p for p in os.listdir(shard_dir) if p.startswith("valid_") and p.endswith(".bin"))
    if len(valid) != 1:
        fail(f"expected one validation shard in {shard_dir}, found {valid}")
    info = split_validation(os.path.join(shard_dir, valid[0]), eos, os.path.dirname(slices_json))
    with open(slices_json, "w") as f:
        json.dump(info, f, indent=1)
    return config_path


# ---------------------------------------------------------------- one run
class Stop(Exception):
    pass


CHILD = {"process": None}


def on_signal(signum, frame):
    process = CHILD["process"]
    if process is not None and process.poll() is None:
        process.terminate()
    raise Stop()


def run_logged(command, log_path):
    with open(log_path, "a") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        CHILD["process"] = process
        try:
            return process.wait()
        finally:
            CHILD["process"] = None


def safetensors_tensor_bytes(path):
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    return sum(e["data_offsets"][1] - e["data_offsets"][0] for k, e in header.items() if k != "__metadata__")


def latest_checkpoint(directory):
    checkpoints = os.path.join(directory, "checkpoints")
    with open(os.path.join(checkpoints, "latest")) as f:
        return os.path.join(checkpoints, f.read().strip())


def evaluate(binary, config_path, sets, checkpoint, shard, max_tokens, log_path):
    command = [binary, "eval", config_path, "--checkpoint", checkpoint, "--data", shard, "--max-tokens", str(max_tokens)]
    for s in sets:
        command += ["--set", s]
    with open(log_path, "a") as log:
        done = subprocess.run(command, capture_output=True, text=True)
        log.write(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"eval failed ({done.returncode}); see {log_path}")
    last = [line for line in done.stdout.splitlines() if line.startswith("{")][-1]
    return json.loads(last)


def commit_of_checkout():
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "include"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head.stdout.strip() + (" (with uncommitted changes in src/ or include/)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def do_run(spec, binary, config_path, label, lr, seed, commit):
    directory = run_dir(spec, label, lr, seed)
    result_path = os.path.join(directory, "result.json")
    if os.path.isfile(result_path):
        return json.load(open(result_path)), False
    sets = run_overrides(spec, label, lr, seed, directory)
    os.makedirs(directory, exist_ok=True)
    overrides_path = os.path.join(directory, "overrides.txt")
    if os.path.isfile(overrides_path):
        with open(overrides_path) as f:
            before = f.read().split("\n")[:-1]
        if before != sets:
            fail(f"{directory} was started with other overrides than the spec now asks (compare "
                 f"{overrides_path}); use another work_dir or remove the folder")
    else:
        with open(overrides_path, "w") as f:
            f.write("".join(s + "\n" for s in sets))
    log_path = os.path.join(directory, "train.log")
    command = [binary, config_path, "--resume", "auto"]
    for s in sets:
        command += ["--set", s]
    code = run_logged(command, log_path)
    if code != 0:
        raise RuntimeError(f"training failed ({code}); see {log_path}")
    checkpoint = latest_checkpoint(directory)
    slices = os.path.join(spec["work_dir"], "slices")
    select = evaluate(binary, config_path, sets, checkpoint, os.path.join(slices, "select.bin"), spec["eval_tokens"],
                      log_path)
    report = evaluate(binary, config_path, sets, checkpoint, os.path.join(slices, "report.bin"), spec["eval_tokens"],
                      log_path)
    train, _ = metrics_jsonl.read_metrics(os.path.join(directory, "metrics.jsonl"))
    last = train[-1]
    result = {
        "label": label, "lr": lr, "seed": seed, "overrides": sets, "commit": commit,
        "steps": last["step"], "tokens": last["tokens"],
        "select_loss": select["loss"], "select_tokens": select["tokens"],
        "report_loss": report["loss"], "report_tokens": report["tokens"],
        "train_loss_last5": sum(r["loss"] for r in train[-5:]) / len(train[-5:]),
        "train_seconds": last["elapsed_s"],
        "tokens_per_s": last["tokens"] / last["elapsed_s"] if last["elapsed_s"] > 0 else None,
        "optimizer_state_bytes": safetensors_tensor_bytes(os.path.join(checkpoint, "optimizer.safetensors")),
        "curve": [[r["tokens"], r["loss"]] for r in train],
        "finished": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    with open(result_path + ".tmp", "w") as f:
        json.dump(result, f)
    os.replace(result_path + ".tmp", result_path)
    # The weights are evaluated and the state size recorded: the checkpoints are not needed again.
    shutil.rmtree(os.path.join(directory, "checkpoints"), ignore_errors=True)
    return result, True


# ---------------------------------------------------------------- the protocol
def finished_result(spec, label, lr, seed):
    path = os.path.join(run_dir(spec, label, lr, seed), "result.json")
    return json.load(open(path)) if os.path.isfile(path) else None


def selection(spec, label):
    """{lr: selection loss} of the label's finished tune runs, and the best lr once the whole grid
    is finished (None before)."""
    grid = spec["optimizers"][label]["lr"]
    losses = {}
    for lr in grid:
        r = finished_result(spec, label, lr, spec["tune_seed"])
        if r is not None:
            losses[lr] = r["select_loss"]
    best = sweep_stats.best_lr(losses)[0] if len(losses) == len(grid) else None
    return losses, best


def planned_runs(spec):
    """Every run of the protocol that can be named now: the tune grid, then the seeds of each entry
    whose grid is complete, in the order they run."""
    # Grid position by position across the entries (each grid lists its default first), so that a
    # sweep stopped early has compared every entry at the same number of points.
    entries = spec["optimizers"].items()
    longest = max(len(entry["lr"]) for _, entry in entries)
    runs = [(label, entry["lr"][i], spec["tune_seed"]) for i in range(longest) for label, entry in entries
            if i < len(entry["lr"])]
    for label in spec["optimizers"]:
        best = selection(spec, label)[1]
        if best is not None:
            runs += [(label, best, s) for s in spec["seeds"] if (label, best, s) not in runs]
    return runs


def total_run_count(spec):
    grid = sum(len(e["lr"]) for e in spec["optimizers"].values())
    extra_seeds = len([s for s in spec["seeds"] if s != spec["tune_seed"]])
    return grid + extra_seeds * len(spec["optimizers"])


def command_run(spec, binary, until, max_runs, commit):
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    config_path = prepare_data(spec, binary)
    commit = commit or commit_of_checkout()
    with open(os.path.join(spec["work_dir"], "command.txt"), "a") as f:
        f.write(" ".join(["scripts/sweep.py"] + sys.argv[1:]) + "\n")
    progress_path = os.path.join(spec["work_dir"], "progress.txt")
    started, done_now, durations = time.time(), 0, []
    try:
        while True:
            pending = [r for r in planned_runs(spec) if finished_result(spec, *r) is None]
            finished = total_run_count(spec) - len(pending) - unnamed_seed_runs(spec)
            if not pending:
                print("sweep.py: every run of the protocol is finished")
                return 0
            if max_runs is not None and done_now >= max_runs:
                print(f"sweep.py: stopping after {done_now} runs (--max-runs)")
                return 0
            mean = sum(durations) / len(durations) if durations else None
            if until is not None and mean is not None and time.time() + mean > until:
                print("sweep.py: the next run would not finish before --until; stopping")
                return 0
            label, lr, seed = pending[0]
            eta = f", about {mean / 60:.0f} min per run" if mean else ""
            line = (f"[{finished}/{total_run_count(spec)} finished] running {label} lr={lr_text(lr)} seed={seed}"
                    f"{eta}; started {datetime.datetime.utcnow():%H:%M:%S} UTC")
            print(line, flush=True)
            with open(progress_path, "w") as f:
                f.write(line + "\n")
            t0 = time.time()
            result, _ = do_run(spec, binary, config_path, label, lr, seed, commit)
            durations.append(time.time() - t0)
            done_now += 1
            print(f"    select {result['select_loss']:.4f} report {result['report_loss']:.4f} "
                  f"({durations[-1] / 60:.1f} min, {result['tokens_per_s']:.0f} tokens/s)", flush=True)
    except Stop:
        print("sweep.py: stopped; `run` again continues (the interrupted run resumes from its checkpoint)")
        return 130
    finally:
        print(f"sweep.py: {done_now} runs this session, {(time.time() - started) / 60:.1f} min")


def unnamed_seed_runs(spec):
    """Seed runs of entries whose grid is not finished yet (not yet in planned_runs)."""
    extra = len([s for s in spec["seeds"] if s != spec["tune_seed"]])
    return extra * len([label for label in spec["optimizers"] if selection(spec, label)[1] is None])


def parse_until(text):
    """HH:MM (UTC, today) to a Unix time."""
    hours, minutes = (int(x) for x in text.split(":"))
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.replace(hour=hours, minute=minutes, second=0, microsecond=0).timestamp()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "report"])
    parser.add_argument("spec")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE for every run (after the spec's sets)")
    parser.add_argument("--binary", default=os.environ.get("GUM_TRAIN", os.path.join(ROOT, "build", "bin", "gum_train")))
    parser.add_argument("--until", help="run: start no run expected to end after HH:MM UTC")
    parser.add_argument("--max-runs", type=int, help="run: stop after this many runs")
    parser.add_argument("--commit", help="run: the commit the binary was built from (default: the checkout's HEAD)")
    args = parser.parse_args()
    spec = load_spec(args.spec, args.set)
    if args.command == "run":
        if not os.access(args.binary, os.X_OK):
            fail(f"{args.binary} not found: build gum_train or pass --binary")
        sys.exit(command_run(spec, args.binary, parse_until(args.until) if args.until else None, args.max_runs,
                             args.commit))
    import sweep_report  # matplotlib only for the report
    sweep_report.write_report(spec, sys.argv)


if __name__ == "__main__":
    main()
