#!/usr/bin/env python3
"""Turns `kvc eval` JSON-lines output into plots and a Markdown results page.

Usage:
  python scripts/eval_report.py results/eval.jsonl [more.jsonl ...] \
      --out-dir docs --markdown docs/results.md [--title "..."]
  python scripts/eval_report.py --self-test

Input records (one JSON object per line, field "kind"):
  run        one per file: model, command, n_layer, n_head_kv, tasks, lengths, policies, ...
  task       one task sample under one policy/budget: task, length, policy, budget, score in [0,1],
             kvs_kept, kvs_full, compression_ratio, ...
  fidelity   logit fidelity of one continuation: length, policy, budget, kl, top1 (fraction),
             nll (mean per token), continuation_tokens, kvs_kept, kvs_full, ...
  retained   KVs kept per (layer, KV head) for one prompt: policy, budget, n_layer, n_head_kv,
             retained[layer * n_head_kv + head]
Other kinds (e.g. "summary") are ignored.

Outputs: <out-dir>/eval_score_vs_budget.png, eval_kl_vs_budget.png, eval_retained_heatmap.png
and the Markdown file, which embeds them with relative links. Every number and every note in
the Markdown is computed from the input; nothing is hand-written.

Aggregation rules (also stated in the generated page):
  * a task score cell is the mean over all samples (and, for "all lengths", all lengths);
  * "Avg" is the unweighted mean of the per-task means (a task with more samples does not
    weigh more);
  * the compression ratio of one record is kvs_full / kvs_kept (falling back to the record's
    compression_ratio field), and a cell shows the mean of those per-record ratios;
  * fidelity means (KL, top-1, NLL) are weighted by continuation_tokens; perplexity is
    exp(weighted mean NLL).

Needs only numpy and matplotlib (scripts/setup_reference.sh installs both into .venv).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCORE_PNG = "eval_score_vs_budget.png"
KL_PNG = "eval_kl_vs_budget.png"
HEATMAP_PNG = "eval_retained_heatmap.png"

FULL = "full"
KVCOMPRESS = "kvcompress"

# Canonical policy order (src/compress/kv_policy.cpp) and one fixed style per policy, so a
# policy looks the same in every plot. Unknown policies get styles from EXTRA_STYLES in order
# of first appearance.
KNOWN_POLICIES = ["full", "kvcompress", "streamingllm", "h2o", "snapkv", "pyramidkv",
                  "ada-snapkv", "random"]
POLICY_STYLES = {
    "full": ("black", "None"),
    "kvcompress": ("tab:red", "o"),
    "streamingllm": ("tab:blue", "s"),
    "h2o": ("tab:green", "^"),
    "snapkv": ("tab:orange", "D"),
    "pyramidkv": ("tab:purple", "v"),
    "ada-snapkv": ("tab:brown", "P"),
    "random": ("tab:gray", "X"),
}
EXTRA_STYLES = [("tab:pink", "*"), ("tab:olive", "h"), ("tab:cyan", "<"), ("gold", ">"),
                ("navy", "p"), ("teal", "d")]

EPS = 1e-9


class ReportError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


# ----------------------------------------------------------------------------------------------
# Loading and validation
# ----------------------------------------------------------------------------------------------


@dataclass
class Data:
    files: list[str] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)
    tasks: list[dict] = field(default_factory=list)
    fidelity: list[dict] = field(default_factory=list)
    retained: list[dict] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)


def _where(path: str, lineno: int) -> str:
    return f"{path}:{lineno}"


def _num(rec: dict, key: str, where: str, *, required: bool = True, lo: float | None = None,
         hi: float | None = None) -> float | None:
    if key not in rec or rec[key] is None:
        if required:
            raise ReportError(f"{where}: {rec.get('kind')} record lacks field '{key}'")
        return None
    v = rec[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ReportError(f"{where}: field '{key}' must be a number, got {json.dumps(v)}")
    v = float(v)
    if not math.isfinite(v):
        raise ReportError(f"{where}: field '{key}' is not finite ({v})")
    if (lo is not None and v < lo - EPS) or (hi is not None and v > hi + EPS):
        raise ReportError(f"{where}: field '{key}' = {v} is outside [{lo}, {hi}]")
    return v


def _int(rec: dict, key: str, where: str, *, required: bool = True) -> int | None:
    v = _num(rec, key, where, required=required)
    if v is None:
        return None
    if v != int(v):
        raise ReportError(f"{where}: field '{key}' must be an integer, got {rec[key]}")
    return int(v)


def _str(rec: dict, key: str, where: str) -> str:
    v = rec.get(key)
    if not isinstance(v, str) or not v:
        raise ReportError(f"{where}: {rec.get('kind')} record lacks string field '{key}'")
    return v


def _ratio(rec: dict, where: str) -> float | None:
    kept = _num(rec, "kvs_kept", where, required=False, lo=0)
    full = _num(rec, "kvs_full", where, required=False, lo=0)
    if kept is not None and full is not None and kept > 0:
        return full / kept
    return _num(rec, "compression_ratio", where, required=False, lo=0)


def load(paths: list[str], renames: dict[str, str] | None = None) -> Data:
    """Reads every record; `renames` maps a policy name to the one it is reported under (an
    older name of the same setting, e.g. kvcompress-words for auto)."""
    renames = renames or {}
    data = Data()
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.readlines()
        except OSError as e:
            raise ReportError(f"cannot read {path}: {e.strerror or e}") from None
        except UnicodeDecodeError as e:
            raise ReportError(f"{path}: not UTF-8 text ({e.reason})") from None
        data.files.append(path)
        run_for_file: dict | None = None
        for lineno, line in enumerate(lines, 1):
            where = _where(path, lineno)
            if not line.strip():
                continue
            try:
                rec = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as e:
                raise ReportError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(rec, dict):
                raise ReportError(f"{where}: expected a JSON object, got {type(rec).__name__}")
            kind = rec.get("kind")
            if not isinstance(kind, str):
                raise ReportError(f"{where}: record has no string field 'kind'")
            if kind == "run":
                run = dict(rec)
                run["_where"] = where
                data.runs.append(run)
                run_for_file = run
            elif kind == "task":
                data.tasks.append({
                    "task": _str(rec, "task", where),
                    "length": _int(rec, "length", where),
                    "sample": _int(rec, "sample", where, required=False),
                    "policy": _str(rec, "policy", where),
                    "budget": _int(rec, "budget", where),
                    "score": _num(rec, "score", where, lo=0.0, hi=1.0),
                    "kvs_kept": _num(rec, "kvs_kept", where, required=False, lo=0),
                    "kvs_full": _num(rec, "kvs_full", where, required=False, lo=0),
                    "ratio": _ratio(rec, where),
                })
            elif kind == "fidelity":
                data.fidelity.append({
                    "length": _int(rec, "length", where),
                    "policy": _str(rec, "policy", where),
                    "budget": _int(rec, "budget", where),
                    "kl": _num(rec, "kl", where, lo=0.0),
                    "top1": _num(rec, "top1", where, lo=0.0, hi=1.0),
                    "nll": _num(rec, "nll", where, lo=0.0),
                    "weight": _num(rec, "continuation_tokens", where, required=False, lo=0) or 1.0,
                    "kvs_kept": _num(rec, "kvs_kept", where, required=False, lo=0),
                    "ratio": _ratio(rec, where),
                })
            elif kind == "retained":
                n_layer = _int(rec, "n_layer", where, required=False)
                n_head = _int(rec, "n_head_kv", where, required=False)
                if n_layer is None and run_for_file is not None:
                    n_layer = _int(run_for_file, "n_layer", run_for_file["_where"], required=False)
                if n_head is None and run_for_file is not None:
                    n_head = _int(run_for_file, "n_head_kv", run_for_file["_where"],
                                  required=False)
                if not n_layer or not n_head or n_layer < 0 or n_head < 0:
                    raise ReportError(f"{where}: retained record needs positive n_layer and "
                                      "n_head_kv (in the record or the file's run record)")
                vals = rec.get("retained")
                if not isinstance(vals, list) or any(
                        isinstance(v, bool) or not isinstance(v, (int, float))
                        or not math.isfinite(v) for v in vals):
                    raise ReportError(f"{where}: field 'retained' must be a list of numbers")
                if len(vals) != n_layer * n_head:
                    raise ReportError(f"{where}: 'retained' has {len(vals)} entries, expected "
                                      f"n_layer*n_head_kv = {n_layer}*{n_head} = {n_layer * n_head}")
                data.retained.append({
                    "policy": _str(rec, "policy", where),
                    "budget": _int(rec, "budget", where),
                    "length": _int(rec, "length", where, required=False),
                    "n_layer": n_layer,
                    "n_head_kv": n_head,
                    "grid": np.asarray(vals, dtype=float).reshape(n_layer, n_head),
                })
            else:
                data.ignored[kind] = data.ignored.get(kind, 0) + 1
    for rec in data.tasks + data.fidelity + data.retained:
        rec["policy"] = renames.get(rec["policy"], rec["policy"])
    return data


# ----------------------------------------------------------------------------------------------
# Aggregation
# ----------------------------------------------------------------------------------------------


def _dedupe(seq):
    out = []
    for x in seq:
        if x not in out:
            out.append(x)
    return out


def policy_order(data: Data) -> list[str]:
    present = set(r["policy"] for r in data.tasks + data.fidelity + data.retained)
    declared = [p for run in data.runs for p in (run.get("policies") or []) if isinstance(p, str)]
    appearance = [r["policy"] for r in data.tasks + data.fidelity + data.retained]
    order = _dedupe([FULL] + declared + KNOWN_POLICIES + appearance)
    return [p for p in order if p in present]


def task_order(data: Data) -> list[str]:
    declared = [t for run in data.runs for t in (run.get("tasks") or []) if isinstance(t, str)]
    present = set(r["task"] for r in data.tasks)
    return [t for t in _dedupe(declared + [r["task"] for r in data.tasks]) if t in present]


def policy_styles(policies: list[str]) -> dict[str, tuple[str, str]]:
    styles, extra = {}, iter(EXTRA_STYLES * 4)
    for p in policies:
        styles[p] = POLICY_STYLES.get(p) or next(extra)
    return styles


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


@dataclass
class ScoreCell:
    per_task: dict[str, float]  # task -> mean score in [0, 1]
    avg: float  # unweighted mean over per_task
    complete: bool  # has every task of its group
    kvs_kept: float | None
    ratio: float | None
    n: int


def score_cells(records: list[dict], tasks: list[str]) -> dict[tuple[str, int], ScoreCell]:
    """(policy, budget) -> ScoreCell over the given task records."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in records:
        groups.setdefault((r["policy"], r["budget"]), []).append(r)
    cells = {}
    for key, rs in groups.items():
        per_task = {}
        for t in tasks:
            scores = [r["score"] for r in rs if r["task"] == t]
            if scores:
                per_task[t] = sum(scores) / len(scores)
        cells[key] = ScoreCell(
            per_task=per_task,
            avg=sum(per_task.values()) / len(per_task),
            complete=all(t in per_task for t in tasks if any(r["task"] == t for r in records)),
            kvs_kept=_mean([r["kvs_kept"] for r in rs]),
            ratio=_mean([r["ratio"] for r in rs]),
            n=len(rs),
        )
    return cells


def full_reference(records: list[dict], tasks: list[str]) -> float | None:
    """Average score of the full cache, pooled over whatever budgets full was recorded at."""
    full = [dict(r, budget=0) for r in records if r["policy"] == FULL]
    if not full:
        return None
    return score_cells(full, tasks)[(FULL, 0)].avg


@dataclass
class FidCell:
    kl: float
    top1: float
    nll: float
    ppl: float
    ratio: float | None
    n: int


def fidelity_cells(records: list[dict]) -> dict[tuple[str, int], FidCell]:
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in records:
        groups.setdefault((r["policy"], r["budget"]), []).append(r)
    cells = {}
    for key, rs in groups.items():
        w = np.array([r["weight"] for r in rs])
        if w.sum() <= 0:
            w = np.ones(len(rs))

        def wmean(k):
            return float(np.dot(w, [r[k] for r in rs]) / w.sum())
        nll = wmean("nll")
        cells[key] = FidCell(kl=wmean("kl"), top1=wmean("top1"), nll=nll, ppl=math.exp(nll),
                             ratio=_mean([r["ratio"] for r in rs]), n=len(rs))
    return cells


def retained_means(data: Data, policy: str = KVCOMPRESS) -> dict[int, np.ndarray]:
    """budget -> mean retained grid [n_layer, n_head_kv] over all records of the policy."""
    by_budget: dict[int, list[np.ndarray]] = {}
    for r in data.retained:
        if r["policy"] == policy:
            by_budget.setdefault(r["budget"], []).append(r["grid"])
    out = {}
    for b, grids in sorted(by_budget.items()):
        shapes = {g.shape for g in grids}
        if len(shapes) != 1:
            raise ReportError(f"retained records for {policy} C={b} mix model shapes {sorted(shapes)}")
        out[b] = np.mean(grids, axis=0)
    return out


def rows_in_order(keys, policies: list[str]) -> list[tuple[str, int]]:
    return sorted(keys, key=lambda k: (policies.index(k[0]) if k[0] in policies else len(policies),
                                       k[0], k[1]))


def compressed_budgets(keys) -> list[int]:
    return sorted(set(b for p, b in keys if p != FULL))


# ----------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------


def _md(s: str) -> str:
    return str(s).replace("|", "\\|")


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def _ratio_s(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}x"


def _kvs_s(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}"


def _budget_s(policy: str, b: int) -> str:
    return "—" if policy == FULL and b == 0 else str(b)


def _table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> list[str]:
    align = align or ["l"] * 2 + ["r"] * (len(header) - 2)
    sep = ["---:" if a == "r" else ":---" for a in align]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(sep) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _lengths(records: list[dict]) -> list[int]:
    return sorted(set(r["length"] for r in records))


def _length_groups(records: list[dict]) -> list[tuple[str, list[dict]]]:
    """('length 1024', recs), ... plus ('all lengths', all) when there are several lengths."""
    lengths = _lengths(records)
    groups = [(f"length {n}", [r for r in records if r["length"] == n]) for n in lengths]
    if len(lengths) > 1:
        groups.append(("all lengths", records))
    return groups


def table1(data: Data, policies: list[str], tasks: list[str]) -> list[str]:
    out = ["## Table 1 — task scores per length", ""]
    if not data.tasks:
        return out + ["_No `task` records in the input: table skipped._", ""]
    out += ["Score ×100 (mean over samples); **Avg** is the unweighted mean of the task columns; "
            "**KVs kept** is the mean number of cached key/value vectors summed over all layers "
            "and KV heads after compression; **Ratio** is the mean of kvs_full / kvs_kept. "
            "C is the average per-head budget (full cache: —).", ""]
    any_incomplete = False
    for name, recs in _length_groups(data.tasks):
        cells = score_cells(recs, tasks)
        group_tasks = [t for t in tasks if any(r["task"] == t for r in recs)]
        n_samples = sorted(set(c.n for c in cells.values()))
        out += [f"### {name[0].upper() + name[1:]}", ""]
        header = ["Policy", "C"] + [_md(t) for t in group_tasks] + ["Avg", "KVs kept", "Ratio"]
        rows = []
        for key in rows_in_order(cells, policies):
            c = cells[key]
            avg = f"{100 * c.avg:.1f}"
            if not c.complete:
                avg += " †"
                any_incomplete = True
            rows.append([_md(key[0]), _budget_s(*key)]
                        + [_pct(c.per_task.get(t)) for t in group_tasks]
                        + [avg, _kvs_s(c.kvs_kept), _ratio_s(c.ratio)])
        out += _table(header, rows)
        out += ["", f"_Records per row: {', '.join(map(str, n_samples))}._", ""]
    if any_incomplete:
        out += ["† Some tasks have no records for this row; its Avg covers only the tasks shown.",
                ""]
    return out


def _best_per_budget(cells, policies, budgets):
    """budget -> set of non-full policies with the highest avg (ties within EPS all win)."""
    best = {}
    for b in budgets:
        vals = {p: cells[(p, b)].avg for p in policies if p != FULL and (p, b) in cells}
        if vals:
            top = max(vals.values())
            best[b] = {p for p, v in vals.items() if v >= top - EPS}
    return best


def table2(data: Data, policies: list[str], tasks: list[str]) -> list[str]:
    out = ["## Table 2 — average score by policy and budget (all lengths)", ""]
    if not data.tasks:
        return out + ["_No `task` records in the input: table skipped._", ""]
    cells = score_cells(data.tasks, tasks)
    budgets = compressed_budgets(cells)
    if not budgets:
        return out + ["_Only full-cache task records: nothing to compare._", ""]
    full_avg = full_reference(data.tasks, tasks)
    best = _best_per_budget(cells, policies, budgets)
    out += ["Average task score ×100 over all tasks, lengths and samples. Bold: the best "
            "compressed policy at that budget.", ""]
    header = ["Policy"] + [f"C={b}" for b in budgets]
    rows = []
    if full_avg is not None:
        rows.append([f"{FULL} (no eviction)"] + [f"{100 * full_avg:.1f}"] * len(budgets))
    for p in policies:
        if p == FULL:
            continue
        row = [_md(p)]
        for b in budgets:
            c = cells.get((p, b))
            if c is None:
                row.append("—")
                continue
            s = f"{100 * c.avg:.1f}" + ("" if c.complete else " †")
            row.append(f"**{s}**" if p in best.get(b, ()) else s)
        rows.append(row)
    if full_avg is not None and full_avg > 0 and any((KVCOMPRESS, b) in cells for b in budgets):
        rows.append([f"{KVCOMPRESS} % of full"] + [
            f"{100 * cells[(KVCOMPRESS, b)].avg / full_avg:.1f}%" if (KVCOMPRESS, b) in cells
            else "—" for b in budgets])
    out += _table(header, rows, ["l"] + ["r"] * len(budgets))
    out += [""]
    if full_avg is None:
        out += ["_No full-cache task records: the % of full line is omitted._", ""]
    if any(not c.complete for c in cells.values()):
        out += ["† Some tasks have no records for this cell; its average covers only the others.",
                ""]
    return out


def table3(data: Data, policies: list[str]) -> list[str]:
    out = ["## Table 3 — logit fidelity against the full cache", ""]
    if not data.fidelity:
        return out + ["_No `fidelity` records in the input: table skipped._", ""]
    out += ["Over the continuation tokens that follow each context: **KL** is the mean "
            "KL divergence between the full-cache and compressed-cache next-token distributions, **Top-1** the % of positions "
            "where both pick the same token, **PPL** is exp(mean NLL) of the continuation under "
            "that cache (means weighted by continuation tokens).", ""]
    for name, recs in _length_groups(data.fidelity):
        cells = fidelity_cells(recs)
        out += [f"### {name[0].upper() + name[1:]}", ""]
        rows = []
        for key in rows_in_order(cells, policies):
            c = cells[key]
            rows.append([_md(key[0]), _budget_s(*key), f"{c.kl:.4f}", f"{100 * c.top1:.1f}",
                         f"{c.ppl:.2f}", _ratio_s(c.ratio), str(c.n)])
        out += _table(["Policy", "C", "KL", "Top-1 %", "PPL", "Ratio", "n"], rows)
        full_ppl = [cells[k].ppl for k in cells if k[0] == FULL]
        if full_ppl:
            out += ["", f"_Full-cache perplexity: {full_ppl[0]:.2f}._"]
        out += [""]
    return out


def notes(data: Data, policies: list[str], tasks: list[str]) -> list[str]:
    """Factual sentences computed from the data only."""
    out = []
    baselines = [p for p in policies if p not in (FULL, KVCOMPRESS)]
    if data.tasks:
        cells = score_cells(data.tasks, tasks)
        budgets = [b for b in compressed_budgets(cells) if (KVCOMPRESS, b) in cells]
        ge, below = [], []
        for b in budgets:
            k = cells[(KVCOMPRESS, b)].avg
            losers = [(p, cells[(p, b)].avg) for p in baselines
                      if (p, b) in cells and cells[(p, b)].avg > k + EPS]
            if not any((p, b) in cells for p in baselines):
                continue
            if losers:
                below.append((b, k, losers))
            else:
                ge.append(b)
        if ge:
            out.append(f"On the all-lengths average score, kvcompress is ≥ every baseline at "
                       f"C = {', '.join(map(str, ge))}.")
        for b, k, losers in below:
            names = ", ".join(f"{p} ({100 * v:.1f})" for p, v in sorted(losers, key=lambda x: -x[1]))
            out.append(f"At C = {b} kvcompress ({100 * k:.1f}) falls below {names}.")
        # Closest budget to 8x compression, per length.
        for n in _lengths(data.tasks):
            recs = [r for r in data.tasks if r["length"] == n]
            lc = score_cells(recs, tasks)
            full_avg = full_reference(recs, tasks)
            cands = [(b, lc[(KVCOMPRESS, b)]) for b in compressed_budgets(lc)
                     if (KVCOMPRESS, b) in lc and lc[(KVCOMPRESS, b)].ratio]
            if not cands or full_avg is None or full_avg <= 0:
                continue
            b, c = min(cands, key=lambda bc: abs(math.log(bc[1].ratio / 8.0)))
            out.append(f"Length {n}: the kvcompress budget closest to 8x compression is C = {b} "
                       f"({c.ratio:.1f}x), where it keeps {100 * c.avg / full_avg:.1f}% of the "
                       f"full-cache average score ({100 * c.avg:.1f} vs {100 * full_avg:.1f}).")
    if data.fidelity:
        fc = fidelity_cells(data.fidelity)
        budgets = [b for b in compressed_budgets(fc) if (KVCOMPRESS, b) in fc]
        lowest, not_lowest = [], []
        for b in budgets:
            others = [(p, fc[(p, b)].kl) for p in baselines if (p, b) in fc]
            if not others:
                continue
            best_p, best_kl = min(others, key=lambda x: x[1])
            if fc[(KVCOMPRESS, b)].kl <= best_kl + EPS:
                lowest.append(b)
            else:
                not_lowest.append(f"C = {b} ({best_p} {best_kl:.4f} vs kvcompress "
                                  f"{fc[(KVCOMPRESS, b)].kl:.4f})")
        if lowest:
            out.append(f"kvcompress has the lowest mean KL of all compressed policies at "
                       f"C = {', '.join(map(str, lowest))}.")
        if not_lowest:
            out.append("kvcompress does not have the lowest mean KL at " + "; ".join(not_lowest)
                       + ".")
    if data.retained:
        for b, grid in retained_means(data).items():
            per_layer = grid.sum(axis=1)
            out.append(f"C = {b}: kvcompress keeps between {grid.min():.0f} and {grid.max():.0f} "
                       f"KVs per head (mean {grid.mean():.1f}, coefficient of variation "
                       f"{grid.std() / grid.mean() if grid.mean() else 0:.2f}); layer "
                       f"{int(per_layer.argmax())} keeps the most ({per_layer.max():.0f}), layer "
                       f"{int(per_layer.argmin())} the fewest ({per_layer.min():.0f}).")
    return out


def _regen_command(argv_inputs: list[str], out_dir: str, markdown: str, title: str | None,
                   renames: dict[str, str] | None = None) -> str:
    def rel(p):
        ap = os.path.abspath(p)
        r = os.path.relpath(ap, REPO_ROOT)
        return ap if r.startswith("..") else r
    cmd = ["python", "scripts/eval_report.py"] + [rel(p) for p in argv_inputs]
    cmd += ["--out-dir", rel(out_dir), "--markdown", rel(markdown)]
    if title:
        cmd += ["--title", title]
    for old, new in (renames or {}).items():
        cmd += ["--same-policy", f"{old}={new}"]
    return shlex.join(cmd)


def render_markdown(data: Data, title: str, regen: str, markdown_path: str,
                    plots: dict[str, str | None]) -> str:
    policies = policy_order(data)
    tasks = task_order(data)
    lines = [f"# {title}", "",
             "<!-- Generated by scripts/eval_report.py from `kvc eval` output; do not edit by "
             "hand: rerun the command below. -->", ""]

    def run_field(key):
        vals = _dedupe([str(r[key]) for r in data.runs if r.get(key) not in (None, "")])
        return ", ".join(vals) if vals else "unknown"
    lines += [f"- **Model:** {run_field('model')}",
              f"- **Date:** {run_field('date')}"]
    shapes = _dedupe([f"{r['n_layer']} layers × {r['n_head_kv']} KV heads" for r in data.runs
                      if r.get("n_layer") and r.get("n_head_kv")])
    if shapes:
        lines.append(f"- **Model shape:** {', '.join(shapes)}")
    def field_of(key, runs):
        vals = _dedupe([str(r[key]) for r in runs if r.get(key) not in (None, "")])
        return ", ".join(vals)
    # A run's sample counts mean something only for the parts it ran.
    for key, label, part in (("samples", "Samples per task and length", "tasks"),
                             ("fidelity_samples", "Fidelity samples per length", "fidelity_lengths"),
                             ("seed", "Seed", None)):
        runs = [r for r in data.runs if part is None or r.get(part)]
        if field_of(key, runs):
            lines.append(f"- **{label}:** {field_of(key, runs)}")
    counts = (f"{len(data.tasks)} task, {len(data.fidelity)} fidelity and {len(data.retained)} "
              f"retained records from {len(data.files)} file(s)")
    if data.ignored:
        counts += " (ignored: " + ", ".join(f"{n} {k}" for k, n in sorted(data.ignored.items())) + ")"
    lines += [f"- **Input:** {counts}", ""]
    commands = [r["command"] for r in data.runs if isinstance(r.get("command"), str)]
    lines += ["Produced by:", "", "```sh"]
    lines += commands if commands else ["# (no run record with a command in the input)"]
    lines += ["```", "", "Report regenerated by:", "", "```sh", regen, "```", ""]

    lines += table1(data, policies, tasks)
    lines += table2(data, policies, tasks)
    lines += table3(data, policies)

    lines += ["## Notes", "", "_Computed from the records above; no hand-written claims._", ""]
    ns = notes(data, policies, tasks)
    lines += [f"- {n}" for n in ns] if ns else ["- Not enough data for comparisons."]
    lines += [""]

    lines += ["## Plots", ""]
    md_dir = os.path.dirname(os.path.abspath(markdown_path))
    captions = {
        SCORE_PNG: ("Average task score vs budget",
                    "Average task score vs per-head budget C; dashed: full cache."),
        KL_PNG: ("KL and top-1 agreement vs budget",
                 "Mean KL to the full cache (log scale) and top-1 agreement vs budget."),
        HEATMAP_PNG: ("kvcompress retained KVs per layer and head",
                      "kvcompress: mean KVs kept per layer and KV head, one panel per budget."),
    }
    for name, (alt, caption) in captions.items():
        path = plots.get(name)
        if path is None:
            lines += [f"- _{caption.split(';')[0].rstrip('.')}: skipped ({plots.get(name + ':why')})._",
                      ""]
            continue
        link = os.path.relpath(os.path.abspath(path), md_dir).replace(os.sep, "/")
        lines += [f"![{alt}]({link})", "", f"_{caption}_", ""]
    return "\n".join(lines).rstrip() + "\n"


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ReportError("matplotlib is required (pip install matplotlib, or run "
                          "scripts/setup_reference.sh and use .venv/bin/python)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
                         "legend.fontsize": 9})
    return plt


def _log2_budget_axis(ax, budgets):
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets)
    ax.set_xticklabels([str(b) for b in budgets])
    ax.minorticks_off()
    ax.set_xlabel("budget C (KVs per head, log2)")
    ax.grid(True, alpha=0.3)


def _save(fig, path):
    fig.savefig(path, dpi=120, bbox_inches="tight")


def plot_scores(plt, data: Data, policies, styles, tasks, path) -> str | None:
    if not data.tasks:
        return "no task records"
    groups = [(n, [r for r in data.tasks if r["length"] == n]) for n in _lengths(data.tasks)]
    all_budgets = compressed_budgets(score_cells(data.tasks, tasks))
    if not all_budgets:
        return "no compressed-policy task records"
    ncol = len(groups)
    fig, axes = plt.subplots(1, ncol, figsize=(max(6.0, 4.8 * ncol), 4.4), sharey=True,
                             squeeze=False)
    handles = {}
    for ax, (n, recs) in zip(axes[0], groups):
        cells = score_cells(recs, tasks)
        for p in policies:
            if p == FULL:
                continue
            bs = [b for b in compressed_budgets(cells) if (p, b) in cells]
            if not bs:
                continue
            color, marker = styles[p]
            (h,) = ax.plot(bs, [100 * cells[(p, b)].avg for b in bs], color=color, marker=marker,
                           lw=2.2 if p == KVCOMPRESS else 1.5, ms=6, label=p,
                           zorder=3 if p == KVCOMPRESS else 2)
            handles[p] = h
        full_avg = full_reference(recs, tasks)
        if full_avg is not None:
            handles[FULL] = ax.axhline(100 * full_avg, color="black", ls="--", lw=1.3,
                                       label="full cache")
        _log2_budget_axis(ax, all_budgets)
        ax.set_title(f"context length {n}")
        ax.set_ylim(0, 105)
    axes[0][0].set_ylabel("average task score (%)")
    order = [p for p in policies if p in handles]
    fig.suptitle("Task score vs KV budget", fontsize=12)
    fig.legend([handles[p] for p in order], ["full cache" if p == FULL else p for p in order],
               loc="lower center", ncol=min(len(order), 8), frameon=False,
               bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    _save(fig, path)
    plt.close(fig)
    return None


def plot_fidelity(plt, data: Data, policies, styles, path) -> str | None:
    if not data.fidelity:
        return "no fidelity records"
    cells = fidelity_cells(data.fidelity)
    budgets = compressed_budgets(cells)
    if not budgets:
        return "no compressed-policy fidelity records"
    from matplotlib import ticker
    fig, (ax_kl, ax_top) = plt.subplots(1, 2, figsize=(10.5, 4.4))
    handles = {}
    any_kl = False
    for p in policies:
        if p == FULL:
            continue
        bs = [b for b in budgets if (p, b) in cells]
        if not bs:
            continue
        color, marker = styles[p]
        kw = dict(color=color, marker=marker, lw=2.2 if p == KVCOMPRESS else 1.5, ms=6, label=p,
                  zorder=3 if p == KVCOMPRESS else 2)
        kl = [(b, cells[(p, b)].kl) for b in bs if cells[(p, b)].kl > 0]
        if kl:
            ax_kl.plot(*zip(*kl), **kw)
            any_kl = True
        (h,) = ax_top.plot(bs, [100 * cells[(p, b)].top1 for b in bs], **kw)
        handles[p] = h
    full = [c for k, c in cells.items() if k[0] == FULL]
    if full:
        handles[FULL] = ax_top.axhline(100 * full[0].top1, color="black", ls="--", lw=1.3,
                                       label="full cache")
        if full[0].kl > 0:
            ax_kl.axhline(full[0].kl, color="black", ls="--", lw=1.3)
    if any_kl:
        ax_kl.set_yscale("log")
        ax_kl.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax_kl.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax_kl.yaxis.set_minor_locator(ticker.NullLocator())
    _log2_budget_axis(ax_kl, budgets)
    _log2_budget_axis(ax_top, budgets)
    ax_kl.set_ylabel("mean KL divergence (log scale)")
    full_kl0 = bool(full) and full[0].kl <= 0
    ax_kl.set_title("KL divergence to the full cache" + (" (full: 0)" if full_kl0 else ""))
    ax_top.set_ylabel("top-1 agreement with full cache (%)")
    ax_top.set_title("Top-1 next-token agreement")
    lo = min([100 * c.top1 for c in cells.values()])
    ax_top.set_ylim(max(0, lo - 5), 101)
    order = [p for p in policies if p in handles]
    fig.suptitle(f"Logit fidelity vs KV budget (lengths {', '.join(map(str, _lengths(data.fidelity)))})",
                 fontsize=12)
    fig.legend([handles[p] for p in order], ["full cache" if p == FULL else p for p in order],
               loc="lower center", ncol=min(len(order), 8), frameon=False,
               bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    _save(fig, path)
    plt.close(fig)
    return None


def _pick_budgets(budgets: list[int], k: int = 4) -> list[int]:
    if len(budgets) <= k:
        return budgets
    idx = sorted(set(round(i * (len(budgets) - 1) / (k - 1)) for i in range(k)))
    return [budgets[i] for i in idx]


def plot_retained(plt, data: Data, path) -> str | None:
    if not data.retained:
        return "no retained records"
    means = retained_means(data)
    if not means:
        return "no kvcompress retained records"
    budgets = _pick_budgets(sorted(means))
    n_layer, n_head = means[budgets[0]].shape
    panel_w = min(4.2, 1.6 + 0.35 * n_head)
    height = min(9.0, max(3.5, 1.4 + 0.2 * n_layer))
    fig, axes = plt.subplots(1, len(budgets), figsize=(panel_w * len(budgets) + 0.6, height),
                             squeeze=False)
    for ax, b in zip(axes[0], budgets):
        grid = means[b]
        im = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_title(f"C = {b}\n(mean {grid.mean():.0f}/head)")
        ax.set_xlabel("KV head")
        ax.set_xticks(range(n_head))
        step = max(1, int(math.ceil(n_layer / 16)))
        ax.set_yticks(range(0, n_layer, step))
        if ax is axes[0][0]:
            ax.set_ylabel("layer")
        cb = fig.colorbar(im, ax=ax, fraction=0.08, pad=0.04, aspect=40)
        cb.set_label("KVs kept", fontsize=9)
    fig.suptitle("kvcompress: mean retained KVs per layer and KV head", fontsize=12)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return None


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------


def build_report(inputs: list[str], out_dir: str, markdown: str, title: str | None,
                 renames: dict[str, str] | None = None) -> dict:
    data = load(inputs, renames)
    if not (data.tasks or data.fidelity or data.retained):
        print("eval_report: warning: no task, fidelity or retained records in the input; the "
              "report will only have its header", file=sys.stderr)
    plt = _pyplot()
    try:
        os.makedirs(out_dir, exist_ok=True)
        md_dir = os.path.dirname(os.path.abspath(markdown))
        os.makedirs(md_dir, exist_ok=True)
    except OSError as e:
        raise ReportError(f"cannot create output directory: {e}") from None
    policies = policy_order(data)
    styles = policy_styles(policies)
    tasks = task_order(data)
    plots: dict[str, str | None] = {}
    for name, fn in ((SCORE_PNG, lambda p: plot_scores(plt, data, policies, styles, tasks, p)),
                     (KL_PNG, lambda p: plot_fidelity(plt, data, policies, styles, p)),
                     (HEATMAP_PNG, lambda p: plot_retained(plt, data, p))):
        path = os.path.join(out_dir, name)
        why = fn(path)
        plots[name] = None if why else path
        plots[name + ":why"] = why
    text = render_markdown(data, title or "KV-cache compression evaluation",
                           _regen_command(inputs, out_dir, markdown, title, renames), markdown, plots)
    try:
        with open(markdown, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise ReportError(f"cannot write {markdown}: {e.strerror or e}") from None
    return {"data": data, "markdown": text, "plots": plots}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Turn `kvc eval` JSON-lines output into PNG plots and a Markdown report.")
    ap.add_argument("inputs", nargs="*", help="JSON-lines files written by `kvc eval`")
    ap.add_argument("--out-dir", default="docs", help="directory for the PNGs (default: docs)")
    ap.add_argument("--markdown", default=None,
                    help="Markdown file to write (default: OUT_DIR/results.md)")
    ap.add_argument("--title", default=None, help="page title")
    ap.add_argument("--same-policy", action="append", default=[], metavar="OLD=NEW",
                    help="report policy OLD under the name NEW (an older name of the same "
                         "setting); repeatable")
    ap.add_argument("--self-test", action="store_true",
                    help="run the built-in test on synthetic data and exit")
    a = ap.parse_args(argv)
    try:
        if a.self_test:
            return self_test()
        if not a.inputs:
            ap.error("at least one input file is required (or --self-test)")
        markdown = a.markdown or os.path.join(a.out_dir, "results.md")
        renames = {}
        for pair in a.same_policy:
            old, sep, new = pair.partition("=")
            if not sep or not old or not new:
                ap.error(f"--same-policy {pair!r}: expected OLD=NEW")
            renames[old] = new
        res = build_report(a.inputs, a.out_dir, markdown, a.title, renames)
    except ReportError as e:
        print(f"eval_report: error: {e}", file=sys.stderr)
        return 1
    for name in (SCORE_PNG, KL_PNG, HEATMAP_PNG):
        p = res["plots"][name]
        print(f"wrote {p}" if p else f"skipped {name}: {res['plots'][name + ':why']}")
    print(f"wrote {markdown}")
    return 0


# ----------------------------------------------------------------------------------------------
# Self-test
# ----------------------------------------------------------------------------------------------

# Hand-written scores: SCORES[(policy, budget)][(task, length)] = [sample 0, sample 1].
ST_TASKS = ["niah_single_1", "vt"]
ST_LENGTHS = [1024, 2048]
ST_SCORES = {
    ("full", 0): {("niah_single_1", 1024): [1, 1], ("niah_single_1", 2048): [1, 1],
                  ("vt", 1024): [1, 1], ("vt", 2048): [1, 0]},
    ("kvcompress", 64): {("niah_single_1", 1024): [1, 0], ("niah_single_1", 2048): [0, 0],
                         ("vt", 1024): [1, 1], ("vt", 2048): [1, 0]},
    ("kvcompress", 128): {("niah_single_1", 1024): [1, 1], ("niah_single_1", 2048): [1, 0],
                          ("vt", 1024): [1, 1], ("vt", 2048): [1, 0]},
    ("snapkv", 64): {("niah_single_1", 1024): [1, 1], ("niah_single_1", 2048): [1, 0],
                     ("vt", 1024): [1, 0], ("vt", 2048): [0.5, 0.5]},
    ("snapkv", 128): {("niah_single_1", 1024): [1, 0], ("niah_single_1", 2048): [0, 1],
                      ("vt", 1024): [1, 0.5], ("vt", 2048): [0.5, 0]},
}
# FIDELITY[(policy, budget)] = (kl, top1, nll) per sample, the same at both lengths.
ST_FIDELITY = {
    ("full", 0): [(0.0, 1.0, 2.0), (0.0, 1.0, 2.2)],
    ("kvcompress", 64): [(0.30, 0.80, 2.5), (0.50, 0.70, 2.7)],
    ("kvcompress", 128): [(0.10, 0.90, 2.2), (0.20, 0.86, 2.4)],
    ("snapkv", 64): [(0.40, 0.75, 2.6), (0.60, 0.65, 2.8)],
    ("snapkv", 128): [(0.05, 0.95, 2.1), (0.15, 0.91, 2.3)],
}
ST_N_LAYER, ST_N_HEAD = 4, 2


def _synthetic_jsonl(path: str) -> None:
    lines = [{"kind": "run", "model": "synthetic-model.gguf",
              "command": "kvc eval -m synthetic-model.gguf --tasks niah_single_1,vt "
                         "--lengths 1024,2048 --policies full,kvcompress,snapkv --budgets 64,128",
              "n_layer": ST_N_LAYER, "n_head_kv": ST_N_HEAD, "tasks": ST_TASKS,
              "lengths": ST_LENGTHS, "policies": ["full", "kvcompress", "snapkv"],
              "budgets": [64, 128], "samples": 2, "seed": 0, "date": "2026-11-30"}]
    heads = ST_N_LAYER * ST_N_HEAD
    for (policy, budget), per in ST_SCORES.items():
        for (task, length), scores in per.items():
            prompt = length - 24
            for s, score in enumerate(scores):
                full = prompt * heads
                kept = full if policy == FULL else budget * heads
                lines.append({"kind": "task", "task": task, "length": length, "sample": s,
                              "prompt_tokens": prompt, "policy": policy, "budget": budget,
                              "score": score, "prediction": "x", "answers": ["x"],
                              "kvs_kept": kept, "kvs_full": full, "bytes_kept": kept * 64,
                              "bytes_full": full * 64, "compression_ratio": full / kept,
                              "decode_seconds": 0.1})
    for (policy, budget), samples in ST_FIDELITY.items():
        for length in ST_LENGTHS:
            for s, (kl, top1, nll) in enumerate(samples):
                full = length * heads
                kept = full if policy == FULL else budget * heads
                lines.append({"kind": "fidelity", "length": length, "sample": s,
                              "context_tokens": length, "continuation_tokens": 128,
                              "policy": policy, "budget": budget, "kl": kl, "top1": top1,
                              "nll": nll, "ppl": math.exp(nll), "kvs_kept": kept,
                              "kvs_full": full, "compression_ratio": full / kept})
    # kvcompress keeps more in later layers: retained[l, h] = budget * (0.5 + l/ (n_layer-1)) +/- h
    for budget in (64, 128):
        for s in range(2):
            grid = [[budget * (0.5 + l / (ST_N_LAYER - 1)) + (4 * h - 2) * (1 + s)
                     for h in range(ST_N_HEAD)] for l in range(ST_N_LAYER)]
            lines.append({"kind": "retained", "policy": "kvcompress", "budget": budget,
                          "length": 2048, "task": "niah_single_1", "sample": s,
                          "n_layer": ST_N_LAYER, "n_head_kv": ST_N_HEAD,
                          "retained": [round(v) for row in grid for v in row]})
    lines.append({"kind": "summary", "note": "ignored"})
    with open(path, "w", encoding="utf-8") as f:
        for rec in lines:
            f.write(json.dumps(rec) + "\n")


def _find_row(md: str, section: str, first_cells: list[str]) -> list[str]:
    """Cells of the first table row under heading `section` that starts with first_cells."""
    lines = md.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("#") and l.lstrip("# ") == section)
    for l in lines[start + 1:]:
        if l.startswith("#"):
            break
        if l.startswith("| "):
            cells = [c.strip() for c in l.strip("|").split("|")]
            if cells[:len(first_cells)] == first_cells:
                return cells
    raise AssertionError(f"no row {first_cells} under '{section}'")


def self_test() -> int:
    checks = 0

    def check(cond, what):
        nonlocal checks
        if not cond:
            raise AssertionError(what)
        checks += 1
        print(f"  ok  {what}")

    with tempfile.TemporaryDirectory(prefix="eval_report_selftest_") as tmp:
        jsonl = os.path.join(tmp, "eval.jsonl")
        _synthetic_jsonl(jsonl)
        out_dir = os.path.join(tmp, "docs")
        md_path = os.path.join(out_dir, "results.md")
        print(f"self-test: synthetic input {jsonl}")
        res = build_report([jsonl], out_dir, md_path, None)
        md = res["markdown"]
        check(open(md_path, encoding="utf-8").read() == md, "markdown written to --markdown path")
        check("- **Model:** synthetic-model.gguf" in md and "- **Date:** 2026-11-30" in md,
              "header names model and date")
        check("kvc eval -m synthetic-model.gguf --tasks niah_single_1,vt" in md,
              "header quotes the run command")
        check("scripts/eval_report.py" in md and "--markdown" in md, "header has regenerate command")
        check("1 summary" in md, "unknown kind 'summary' counted as ignored")

        # Table 1, length 1024, kvcompress C=64: niah [1,0] -> 50.0, vt [1,1] -> 100.0,
        # avg 75.0, kvs kept 64*8 = 512, ratio (1000*8)/512 = 15.625 -> 15.6x.
        row = _find_row(md, "Length 1024", ["kvcompress", "64"])
        check(row == ["kvcompress", "64", "50.0", "100.0", "75.0", "512", "15.6x"],
              f"table 1 length 1024 kvcompress C=64 = {row}")
        # Length 2048, snapkv C=64: niah [1,0] -> 50.0, vt [.5,.5] -> 50.0, avg 50.0,
        # ratio 2024*8/512 = 31.625 -> 31.6x.
        row = _find_row(md, "Length 2048", ["snapkv", "64"])
        check(row == ["snapkv", "64", "50.0", "50.0", "50.0", "512", "31.6x"],
              f"table 1 length 2048 snapkv C=64 = {row}")
        # All lengths, full: niah 4/4 -> 100.0, vt 3/4 -> 75.0, avg 87.5,
        # kvs kept mean(1000*8, 2024*8) = 12096, ratio 1.0x.
        row = _find_row(md, "All lengths", ["full", "—"])
        check(row == ["full", "—", "100.0", "75.0", "87.5", "12,096", "1.0x"],
              f"table 1 all lengths full = {row}")
        # All lengths kvcompress C=128: niah [1,1,1,0] -> 75, vt [1,1,1,0] -> 75, avg 75;
        # ratio mean(1000*8/1024, 2024*8/1024) = mean(7.8125, 15.8125) = 11.8125 -> 11.8x.
        row = _find_row(md, "All lengths", ["kvcompress", "128"])
        check(row == ["kvcompress", "128", "75.0", "75.0", "75.0", "1,024", "11.8x"],
              f"table 1 all lengths kvcompress C=128 = {row}")
        # Row order: full first, then kvcompress 64, 128, then snapkv 64, 128.
        sec = md.split("### Length 1024")[1].split("###")[0]
        order = [l.split("|")[1].strip() + "/" + l.split("|")[2].strip()
                 for l in sec.splitlines() if l.startswith("| ") and not l.startswith("| Policy")]
        check(order == ["full/—", "kvcompress/64", "kvcompress/128", "snapkv/64", "snapkv/128"],
              f"table 1 row order {order}")

        # Table 2: kvcompress C=64 all lengths: niah [1,0,0,0] = 25, vt [1,1,1,0] = 75 -> 50.0;
        # snapkv C=64: niah [1,1,1,0] = 75, vt [1,0,.5,.5] = 50 -> 62.5 (bold, best);
        # C=128: kvcompress 75.0 (bold) vs snapkv niah 50, vt [1,.5,.5,0] = 50 -> 50.0.
        sec2 = "Table 2 — average score by policy and budget (all lengths)"
        check(_find_row(md, sec2, ["kvcompress"]) == ["kvcompress", "50.0", "**75.0**"],
              "table 2 kvcompress row = 50.0, **75.0**")
        check(_find_row(md, sec2, ["snapkv"]) == ["snapkv", "**62.5**", "50.0"],
              "table 2 snapkv row = **62.5**, 50.0")
        check(_find_row(md, sec2, ["full (no eviction)"]) == ["full (no eviction)", "87.5", "87.5"],
              "table 2 full reference = 87.5")
        # % of full: 50/87.5 = 57.1%, 75/87.5 = 85.7%.
        check(_find_row(md, sec2, ["kvcompress % of full"]) ==
              ["kvcompress % of full", "57.1%", "85.7%"], "table 2 % of full = 57.1%, 85.7%")

        # Table 3, all lengths: kvcompress C=128 KL mean(.1,.2) = 0.15, top1 mean(.9,.86) = 88.0%,
        # ppl exp(mean(2.2,2.4)) = exp(2.3) = 9.97; full ppl exp(2.1) = 8.17.
        fid_all = md.split("## Table 3")[1].split("## Notes")[0].split("### All lengths")[1]
        row = _find_row("### All lengths\n" + fid_all, "All lengths", ["kvcompress", "128"])
        check(row[:5] == ["kvcompress", "128", "0.1500", "88.0", f"{math.exp(2.3):.2f}"]
              and row[4] == "9.97", f"table 3 kvcompress C=128 = {row}")
        check("_Full-cache perplexity: 8.17._" in fid_all, "table 3 shows full perplexity 8.17")

        # Notes.
        check("kvcompress is ≥ every baseline at C = 128." in md, "note: >= baselines at C=128")
        check("At C = 64 kvcompress (50.0) falls below snapkv (62.5)." in md,
              "note: falls below snapkv at C=64")
        # Length 1024: ratios 15.6x (C=64) and 7.8x (C=128) -> C=128; kvcompress avg there
        # = (100+100)/2 = 100, full = 100 -> 100.0%. Length 2048: 31.6x vs 15.8x -> C=128,
        # kvcompress avg (50+50)/2 = 50 vs full (100+50)/2 = 75 -> 66.7%.
        check("Length 1024: the kvcompress budget closest to 8x compression is C = 128 (7.8x), "
              "where it keeps 100.0% of the full-cache average score (100.0 vs 100.0)." in md,
              "note: 8x at length 1024")
        check("Length 2048: the kvcompress budget closest to 8x compression is C = 128 (15.8x), "
              "where it keeps 66.7% of the full-cache average score (50.0 vs 75.0)." in md,
              "note: 8x at length 2048")
        check("kvcompress has the lowest mean KL of all compressed policies at C = 64." in md
              and "kvcompress does not have the lowest mean KL at C = 128 (snapkv 0.1000 vs "
                  "kvcompress 0.1500)." in md, "notes: KL comparison")

        # Retained means: grid[l, h] = round(b*(0.5 + l/3) + (4h-2)(1+s)), mean over s=0,1.
        means = retained_means(res["data"])
        exp64 = np.array([[np.mean([round(64 * (0.5 + l / 3) + (4 * h - 2) * (1 + s))
                                    for s in range(2)]) for h in range(2)] for l in range(4)])
        check(sorted(means) == [64, 128] and np.allclose(means[64], exp64),
              "retained mean grid for C=64 matches hand computation")

        for name in (SCORE_PNG, KL_PNG, HEATMAP_PNG):
            p = os.path.join(out_dir, name)
            ok = os.path.isfile(p) and os.path.getsize(p) > 1000
            with open(p, "rb") as f:
                ok = ok and f.read(8) == b"\x89PNG\r\n\x1a\n"
            check(ok, f"{name} exists and is a non-empty PNG ({os.path.getsize(p)} bytes)")
            check(f"]({name})" in md, f"markdown embeds {name} with a relative link")

        # Missing kinds: only task records -> tables 3 and plots 2-3 skipped with a note.
        only_tasks = os.path.join(tmp, "only_tasks.jsonl")
        with open(jsonl) as src, open(only_tasks, "w") as dst:
            dst.writelines(l for l in src if '"kind": "task"' in l)
        res2 = build_report([only_tasks], os.path.join(tmp, "d2"), os.path.join(tmp, "d2", "r.md"),
                            "Only tasks")
        check("_No `fidelity` records in the input: table skipped._" in res2["markdown"]
              and "skipped (no fidelity records)" in res2["markdown"]
              and "skipped (no retained records)" in res2["markdown"]
              and res2["plots"][SCORE_PNG] is not None and res2["plots"][KL_PNG] is None,
              "missing kinds: fidelity table and plots skipped with notes")
        check("# Only tasks" in res2["markdown"], "--title sets the page title")

        # Errors: clear one-line message, exit 1, no traceback (run as a subprocess).
        bad = os.path.join(tmp, "bad.jsonl")
        with open(bad, "w") as f:
            f.write('{"kind": "run"}\n\n{"kind": "task", "task": "vt"\n')
        script = os.path.abspath(__file__)
        for args, expect in (([bad], f"{bad}:3: malformed JSON"),
                             ([os.path.join(tmp, "nope.jsonl")], "cannot read"),):
            p = subprocess.run([sys.executable, script, *args, "--out-dir",
                                os.path.join(tmp, "d3")], capture_output=True, text=True)
            check(p.returncode == 1 and expect in p.stderr and "Traceback" not in p.stderr,
                  f"error exit 1 with '{expect}': {p.stderr.strip()}")
        with open(bad, "w") as f:
            f.write('{"kind": "task", "task": "vt", "length": 1024, "policy": "full", '
                    '"budget": 0}\n')
        p = subprocess.run([sys.executable, script, bad, "--out-dir", os.path.join(tmp, "d3")],
                           capture_output=True, text=True)
        check(p.returncode == 1 and f"{bad}:1: task record lacks field 'score'" in p.stderr
              and "Traceback" not in p.stderr, f"missing field named: {p.stderr.strip()}")

        keep = os.environ.get("EVAL_REPORT_SELFTEST_KEEP")
        if keep:
            import shutil
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(out_dir, keep)
            print(f"self-test: copied outputs to {keep}")
    print(f"self-test passed ({checks} checks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
