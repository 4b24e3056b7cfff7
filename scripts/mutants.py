#!/usr/bin/env python3
"""The planted bugs of scripts/mutation_check.sh: reads scripts/mutants.tsv, applies one mutant
to a copy of the tree, and writes the result table. Standard library only.

mutants.tsv has one mutant per line, six tab-separated fields:
    id  file  tests  original  replacement  description
`file` is relative to the repository root; `tests` is the CTest regular expression (ctest -R) of
the tests that should kill the mutant; `original` must occur exactly once in `file` and is
replaced by `replacement` (both may hold \\n, \\t and \\\\ escapes; the replacement may be empty).
Lines that are empty or start with '#' are comments.

Subcommands (all take the mutants file first):
    list     MUTANTS [--ids a,b]           id, file and description of each mutant
    rows     MUTANTS [--ids a,b]           id, file and tests, tab-separated (for the driver's loop)
    check    MUTANTS TREE [--ids a,b]      every original occurs exactly once in TREE
    apply    MUTANTS TREE ID               plant mutant ID in TREE (in place)
    report   MUTANTS RESULTS OUT_DIR       results.md and results.json from the driver's RESULTS
"""
import argparse
import json
import os
import sys

FIELDS = ("id", "file", "tests", "original", "replacement", "description")


def fail(message):
    print(f"mutants: {message}", file=sys.stderr)
    sys.exit(2)


def unescape(text):
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in "nt\\":
                out.append({"n": "\n", "t": "\t", "\\": "\\"}[nxt])
                i += 2
                continue
            fail(f"unknown escape '\\{nxt}' in '{text}' (use \\n, \\t or \\\\)")
        out.append(text[i])
        i += 1
    return "".join(out)


def read_mutants(path):
    mutants, seen = [], set()
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            fields = line.split("\t")
            if len(fields) != len(FIELDS):
                fail(f"{path}:{number}: {len(fields)} tab-separated fields, expected {len(FIELDS)} ({', '.join(FIELDS)})")
            row = dict(zip(FIELDS, fields))
            for key in ("id", "file", "tests", "original", "description"):
                if not row[key].strip():
                    fail(f"{path}:{number}: empty '{key}'")
            if row["id"] in seen:
                fail(f"{path}:{number}: duplicate id '{row['id']}'")
            seen.add(row["id"])
            row["original"] = unescape(row["original"])
            row["replacement"] = unescape(row["replacement"])
            if row["original"] == row["replacement"]:
                fail(f"{path}:{number}: '{row['id']}' replaces its text by itself")
            row["line"] = number
            mutants.append(row)
    return mutants


def select(mutants, ids):
    if not ids:
        return mutants
    wanted = [i for i in ids.split(",") if i]
    by_id = {m["id"]: m for m in mutants}
    unknown = [i for i in wanted if i not in by_id]
    if unknown:
        fail(f"unknown mutant id(s): {', '.join(unknown)} (see --list)")
    return [by_id[i] for i in wanted]


def source_of(tree, mutant):
    path = os.path.join(tree, mutant["file"])
    if not os.path.isfile(path):
        fail(f"mutant '{mutant['id']}' (line {mutant['line']}): {mutant['file']} does not exist")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    count = text.count(mutant["original"])
    if count != 1:
        fail(f"mutant '{mutant['id']}' (line {mutant['line']}): its original text occurs {count} times in "
             f"{mutant['file']}, expected exactly once: {mutant['original']!r}")
    return path, text


def command_apply(mutants, tree, mutant_id):
    mutant = select(mutants, mutant_id)[0]
    path, text = source_of(tree, mutant)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace(mutant["original"], mutant["replacement"]))


def command_report(mutants, results_path, out_dir):
    by_id = {m["id"]: m for m in mutants}
    results = []
    with open(results_path, encoding="utf-8") as f:
        for line in f:
            mutant_id, status, killed_by, build_s, test_s = line.rstrip("\n").split("\t")
            m = by_id[mutant_id]
            results.append({"id": mutant_id, "file": m["file"], "description": m["description"], "tests": m["tests"],
                            "status": status, "killed_by": [t for t in killed_by.split(";") if t],
                            "build_s": float(build_s), "test_s": float(test_s)})
    valid = [r for r in results if r["status"] != "invalid"]
    killed = [r for r in valid if r["status"] == "killed"]
    summary = {"mutants": len(results), "valid": len(valid), "killed": len(killed),
               "survived": [r["id"] for r in valid if r["status"] == "survived"],
               "invalid": [r["id"] for r in results if r["status"] == "invalid"],
               "kill_ratio": round(len(killed) / len(valid), 4) if valid else None}
    with open(os.path.join(out_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"summary": summary, "results": results}, f, indent=2)
        f.write("\n")
    lines = ["| mutant | file | planted bug | result | first failing test |", "|---|---|---|---|---|"]
    for r in results:
        killer = r["killed_by"][0] if r["killed_by"] else ""
        lines.append(f"| `{r['id']}` | `{r['file']}` | {r['description']} | {r['status']} | {killer} |")
    ratio = f"{100 * summary['kill_ratio']:.1f}%" if valid else "n/a"
    lines.append("")
    lines.append(f"{len(killed)} of {len(valid)} valid mutants killed ({ratio}); "
                 f"{len(summary['invalid'])} invalid (did not build).")
    with open(os.path.join(out_dir, "results.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(lines[-1])
    if summary["survived"]:
        print("survived: " + ", ".join(summary["survived"]))
    if summary["invalid"]:
        print("invalid: " + ", ".join(summary["invalid"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["list", "rows", "check", "apply", "report"])
    parser.add_argument("mutants")
    parser.add_argument("args", nargs="*")
    parser.add_argument("--ids", default="")
    a = parser.parse_args()
    mutants = read_mutants(a.mutants)
    needed = {"list": 0, "rows": 0, "check": 1, "apply": 2, "report": 2}[a.command]
    if len(a.args) != needed:
        fail(f"{a.command} takes {needed} argument(s) after the mutants file, got {len(a.args)}")
    if a.command == "list":
        for m in select(mutants, a.ids):
            print(f"{m['id']:<34} {m['file']:<34} {m['description']}")
    elif a.command == "rows":
        for m in select(mutants, a.ids):
            print(f"{m['id']}\t{m['file']}\t{m['tests']}")
    elif a.command == "check":
        for m in select(mutants, a.ids):
            source_of(a.args[0], m)
    elif a.command == "apply":
        command_apply(mutants, a.args[0], a.args[1])
    else:
        command_report(mutants, a.args[0], a.args[1])


if __name__ == "__main__":
    main()
