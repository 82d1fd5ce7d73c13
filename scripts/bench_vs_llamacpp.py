"""kvc against llama.cpp's llama-bench and llama-batched-bench, interleaved; run through
scripts/bench_vs_llamacpp.sh, which builds the llama.cpp tools first.

Cases (tokens/s, higher is better):
  ppN       prefill of N tokens (llama-bench -p N -n 0; kvc bench --prompt-tokens N). A row
            at the model's whole context (pp8192 on SmolLM2) runs kvc with 2 tokens fewer plus
            one generated token: kvc bench keeps one position spare.
  tg@D      64 decode steps after D tokens of context (llama-bench -p 0 -n 64 -d D;
            kvc bench --prompt-tokens D --gen-tokens 64, one prompt token for D = 0). tg@8127
            is the deepest 64 steps SmolLM2's 8,192-token context holds.
  batchN    N sequences of 512 prompt tokens decoding 64 tokens side by side: decode tokens/s
            of all sequences (llama-batched-bench -npp 512 -ntg 64 -npl N, S_TG;
            kvc bench --serving, decode_only_tokens_per_second).
tg rows also show kvc's memory-bandwidth bound (kvc bench: weight + KV bytes a decode token
reads, over the highest copy bandwidth measured, once before each round) and kvc's share of it.
Each llama.cpp row is the better of flash attention on and off in that round. Every process's
peak resident memory is read by /usr/bin/time. Rounds alternate which engine goes first; the
table shows medians over rounds. Only ratios within one run mean anything on a shared machine.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

ALL_CASES = "pp512,pp2048,pp8192,tg@0,tg@2048,tg@8127,batch4,batch16"
GEN = 64
BATCH_PROMPT = 512


def run(cmd: list[str]) -> tuple[str, float]:
    """Runs cmd under /usr/bin/time; returns (stdout, peak RSS in MiB)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", t.name, *cmd],
                           capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}")
        rss_kib = float(t.read().strip().splitlines()[-1])
    return p.stdout, rss_kib / 1024.0


def kvc_case(args, case: str) -> tuple[float, float]:
    base = [args.kvc, "bench", "-m", args.model, "-t", str(args.threads), "--json",
            "--kernels", args.kvc_kernels]
    if case.startswith("pp"):
        n = int(case[2:])
        prompt, gen = (n - 2, 1) if n + 2 > args.n_ctx else (n, 1)
        # --no-bandwidth: the copy-bandwidth measurement would add its buffers to the peak RSS.
        out, rss = run(base + ["--prompt-tokens", str(prompt), "--gen-tokens", str(gen),
                               "--repeat", "1", "-b", "512", "--no-bandwidth"])
        return json.loads(out.splitlines()[-1])["prefill_tokens_per_second"], rss
    if case.startswith("tg@"):
        depth = int(case[3:])
        # --no-bandwidth: the copy-bandwidth measurement would add its buffers to the peak RSS;
        # the bound uses the bandwidth measured before every round instead.
        out, rss = run(base + ["--prompt-tokens", str(max(depth, 1)), "--gen-tokens", str(GEN),
                               "--repeat", "1", "-b", "512", "--no-bandwidth"])
        row = json.loads(out.splitlines()[-1])
        args.decode_bytes.setdefault(case, []).append(row["decode_bytes_per_token"])
        return row["decode_tokens_per_second"], rss
    if case.startswith("batch"):
        n = int(case[5:])
        kv_mib = n * (BATCH_PROMPT + GEN + 16) * args.kv_bytes_per_token / 2**20 * 1.25
        # -b 512: the step's token budget sizes kvc's activation buffers, as llama.cpp's
        # -ub 512 sizes its compute buffer (decode steps hold at most n tokens either way).
        out, rss = run(base + ["--serving", "--num-prompts", str(n), "--input-lens", str(BATCH_PROMPT),
                               "--output-len", str(GEN), "--compression-rates", "1",
                               "--kv-budget", f"{kv_mib:.1f}", "-b", "512"])
        return json.loads(out.splitlines()[-1])["decode_only_tokens_per_second"], rss
    sys.exit(f"unknown case {case}")


def llama_case(args, case: str, fa: str) -> tuple[float, float]:
    if case.startswith("batch"):
        n = int(case[5:])
        cmd = [os.path.join(args.llama_bin, "llama-batched-bench"), "-m", args.model,
               "-t", str(args.threads), "-npp", str(BATCH_PROMPT), "-ntg", str(GEN), "-npl", str(n),
               "-c", str(n * (BATCH_PROMPT + GEN)), "-b", "2048", "-ub", "512", "-fa", fa,
               "--output-format", "jsonl"]
        out, rss = run(cmd)
        rows = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
        return rows[-1]["speed_tg"], rss
    cmd = [os.path.join(args.llama_bin, "llama-bench"), "-m", args.model, "-t", str(args.threads),
           "-fa", "1" if fa == "on" else "0", "-r", "1", "-o", "json"]
    if case.startswith("pp"):
        cmd += ["-p", case[2:], "-n", "0"]
    else:
        cmd += ["-p", "0", "-n", str(GEN), "-d", case[3:]]
    out, rss = run(cmd)
    return json.loads(out)[0]["avg_ts"], rss


def kvc_info(args) -> dict:
    out = subprocess.run([args.kvc, "info", "-m", args.model, "--json",
                          "--kernels", args.kvc_kernels],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def cpu_model() -> str:
    """The CPU's name with its family and model numbers: a VM's name ("AMD EPYC") alone does
    not tell a Zen 3 from a Zen 4."""
    fields = {}
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
            if not line.strip():
                break  # the first processor's block is enough
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or "unknown CPU"
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-bin", required=True)
    ap.add_argument("--llama-flags", default="")
    ap.add_argument("--kvc-kernels", default="auto",
                    help="kvc's --kernels (auto: the best the CPU runs)")
    ap.add_argument("--kvc", default=os.environ.get("KVC_BIN", "build/release/kvc"))
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cases", default=ALL_CASES)
    ap.add_argument("--json", action="store_true", help="one JSON object per row instead of a table")
    ap.add_argument("--save", metavar="FILE", help="also write the JSON rows to FILE")
    args = ap.parse_args()
    info = kvc_info(args)
    args.n_ctx = int(info["context_length"])
    args.kv_bytes_per_token = int(info["kv_bytes_per_token_f16"])
    cases = [c for c in args.cases.split(",") if c]
    args.decode_bytes = {}  # tg@D -> bytes a decode token reads, per round

    def copy_bandwidth() -> float:
        out, _ = run([args.kvc, "bench", "-m", args.model, "-t", str(args.threads), "--json",
                      "--kernels", args.kvc_kernels, "--prompt-tokens", "1", "--gen-tokens", "1",
                      "--repeat", "1"])
        return json.loads(out.splitlines()[-1])["copy_bandwidth_gb_per_s"] * 1e9

    # Measured before every round; the bound divides by the highest (a ceiling on speed should
    # not drop because one measurement met a busy moment of a shared machine).
    bandwidths = []
    for c in cases:
        if c.startswith("pp") and int(c[2:]) > args.n_ctx or c.startswith("tg@") and int(c[3:]) + GEN + 1 > args.n_ctx:
            sys.exit(f"{c} does not fit the model's context of {args.n_ctx} tokens")

    results = {c: {"kvc": [], "llama": [], "fa": [], "kvc_rss": [], "llama_rss": []} for c in cases}
    total = args.rounds * len(cases)
    done = 0
    for r in range(args.rounds):
        bandwidths.append(copy_bandwidth())
        for c in cases:
            done += 1
            print(f"[{done}/{total}] round {r + 1} {c}", file=sys.stderr, flush=True)
            order = ["kvc", "llama"] if (r + cases.index(c)) % 2 == 0 else ["llama", "kvc"]
            for engine in order:
                if engine == "kvc":
                    tps, rss = kvc_case(args, c)
                    results[c]["kvc"].append(tps)
                    results[c]["kvc_rss"].append(rss)
                else:
                    best = max((llama_case(args, c, fa) + (fa,) for fa in ("on", "off")),
                               key=lambda x: x[0])
                    results[c]["llama"].append(best[0])
                    results[c]["llama_rss"].append(best[1])
                    results[c]["fa"].append(best[2])

    args.bandwidth = max(bandwidths)
    rows = []
    for c in cases:
        res = results[c]
        k, l = statistics.median(res["kvc"]), statistics.median(res["llama"])
        rows.append({"case": c, "kvc": round(k, 2), "llama_cpp": round(l, 2), "ratio": round(k / l, 3),
                     "unit": "tokens/s", "llama_cpp_flash_attn": max(set(res["fa"]), key=res["fa"].count),
                     "kvc_peak_rss_mib": round(max(res["kvc_rss"]), 1),
                     "llama_cpp_peak_rss_mib": round(max(res["llama_rss"]), 1),
                     "rounds": args.rounds, "kvc_runs": [round(x, 2) for x in res["kvc"]],
                     "llama_cpp_runs": [round(x, 2) for x in res["llama"]]})
        if c in args.decode_bytes:
            bound = args.bandwidth / statistics.median(args.decode_bytes[c])
            rows[-1]["bandwidth_bound"] = round(bound, 2)
            rows[-1]["kvc_share_of_bound"] = round(k / bound, 3)
    header = {"cpu": cpu_model(), "kvc_kernels": info.get("cpu_kernels"), "threads": args.threads,
              "copy_bandwidth_gb_per_s": round(args.bandwidth / 1e9, 2),
              "copy_bandwidth_runs_gb_per_s": [round(b / 1e9, 2) for b in bandwidths],
              "model": os.path.basename(args.model), "llama_cpp": f"llama-cpp-python 0.3.36 sdist, {args.llama_flags}"}
    if args.save:
        with open(args.save, "w") as f:
            for row in rows:
                f.write(json.dumps({**header, **row}) + "\n")
    if args.json:
        for row in rows:
            print(json.dumps({**header, **row}))
        return
    print(f"CPU: {header['cpu']}; kvc kernels: {header['kvc_kernels']}; threads: {args.threads}; "
          f"model: {header['model']}")
    print(f"llama.cpp: {header['llama_cpp']}; medians of {args.rounds} interleaved rounds; "
          f"copy bandwidth {args.bandwidth / 1e9:.1f} GB/s (highest of "
          f"{', '.join(f'{b / 1e9:.1f}' for b in bandwidths)}, one before each round)")
    print()
    print("| case | kvc tok/s | llama.cpp tok/s (best fa) | kvc / llama.cpp | memory-bandwidth bound tok/s (kvc's share) "
          "| kvc peak RSS MiB | llama.cpp peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        bound = (f"{row['bandwidth_bound']:.1f} ({100 * row['kvc_share_of_bound']:.0f}%)"
                 if "bandwidth_bound" in row else "-")
        print(f"| {row['case']} | {row['kvc']:.1f} | {row['llama_cpp']:.1f} (fa {row['llama_cpp_flash_attn']}) "
              f"| {row['ratio']:.2f} | {bound} | {row['kvc_peak_rss_mib']:.0f} | {row['llama_cpp_peak_rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
