"""Reading gum_train's metrics.jsonl, shared by scripts/plot_metrics.py and scripts/plot_compare.py.

Each line is one JSON record: a training step (with "loss") or an evaluation (with "val_loss").
"""
import json
import sys


def read_metrics(path, strict=False):
    """Returns (training records, evaluation records) in file order. A line that is not JSON (the
    torn last line of a killed run) is skipped with a warning on stderr, or raises ValueError
    naming the file and line when strict."""
    train, evals = [], []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                if strict:
                    raise ValueError(f"{path}:{number}: not JSON ({e})") from e
                print(f"{path}:{number}: skipping a line that is not JSON", file=sys.stderr)
                continue
            if record.get("val_loss") is not None:
                evals.append(record)
            elif record.get("loss") is not None:
                train.append(record)
    return train, evals
