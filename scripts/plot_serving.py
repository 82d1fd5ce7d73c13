#!/usr/bin/env python3
"""Plots `kvc bench --serving --json` output like the paper's throughput figure: output
tokens/s against the compression rate, one line per input length, with the peak decode batch
annotated; right, the gain over rate 1 for the whole run (prefill included) and for the steps
that ran decode tokens only. Usage: scripts/plot_serving.py RESULTS.jsonl OUT.png"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(data_path, out_path):
    rows = [json.loads(line) for line in open(data_path) if line.strip()]
    if not rows:
        sys.exit("no rows in " + data_path)
    fig, (ax, ax_ratio) = plt.subplots(1, 2, figsize=(11, 4.2))
    for length in sorted({r["input_len"] for r in rows}):
        pts = sorted((r for r in rows if r["input_len"] == length),
                     key=lambda r: r["compression_rate"])
        rates = [r["compression_rate"] for r in pts]
        ax.plot(rates, [r["output_tokens_per_second"] for r in pts], marker="o", label=f"L={length}")
        for r in pts:
            ax.annotate(f'{r["peak_batch"]}', (r["compression_rate"], r["output_tokens_per_second"]),
                        textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
        ratio = [r["ratio_to_rate_1"] for r in pts]
        line, = ax_ratio.plot(rates, ratio, marker="o", label=f"L={length}: whole run")
        base = [r for r in pts if r["compression_rate"] == 1]
        if base and base[0]["decode_only_tokens_per_second"] > 0:
            b = base[0]["decode_only_tokens_per_second"]
            ax_ratio.plot(rates, [r["decode_only_tokens_per_second"] / b for r in pts], marker="x",
                          linestyle="--", color=line.get_color(),
                          label=f"L={length}: decode-only steps")
    first = rows[0]
    for a in (ax, ax_ratio):
        a.set_xscale("log", base=2)
        a.set_xlabel("compression rate")
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    ax.set_ylabel("output tokens / s (labels: peak decode batch)")
    ax_ratio.set_ylabel("output tokens/s relative to rate 1")
    fig.suptitle(f'kvc bench --serving: {first["num_prompts"]} prompts, {first["output_len"]} output '
                 f'tokens, KV budget {first["kv_budget_bytes"] / 2**20:.0f} MiB, '
                 f'{first["kernels"]} kernels', fontsize=10)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
