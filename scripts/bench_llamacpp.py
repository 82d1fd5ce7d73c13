"""llama.cpp's prefill and decode throughput on the same synthetic prompt as `kvc bench`.

Uses PyPI llama-cpp-python (a reference only; never part of the engine). Prints one JSON line.
Usage: python scripts/bench_llamacpp.py MODEL --threads 2 --prompt-tokens 512 --gen-tokens 128
"""
import argparse
import json
import time

from llama_cpp import Llama


def synthetic_prompt(n: int, vocab: int) -> list[int]:
    ids, state = [], 42
    for _ in range(n):
        state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        ids.append(100 + (state >> 33) % (vocab - 100))
    return ids


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    a = ap.parse_args()
    llm = Llama(model_path=a.model, n_ctx=a.prompt_tokens + a.gen_tokens + 16, n_batch=a.batch,
                n_ubatch=a.batch, n_threads=a.threads, n_threads_batch=a.threads, verbose=False)
    ids = synthetic_prompt(a.prompt_tokens + a.gen_tokens, llm.n_vocab())
    prompt, continuation = ids[:a.prompt_tokens], ids[a.prompt_tokens:]
    prefill, decode = [], []
    for r in range(a.repeat + 1):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        t1 = time.perf_counter()
        for token in continuation:  # one decode step per token (logits computed each step)
            llm.eval([token])
        t2 = time.perf_counter()
        if r == 0:
            continue
        prefill.append(a.prompt_tokens / (t1 - t0))
        decode.append(a.gen_tokens / (t2 - t1))
    print(json.dumps({"engine": "llama.cpp (llama-cpp-python)", "threads": a.threads,
                      "prompt_tokens": a.prompt_tokens, "gen_tokens": a.gen_tokens,
                      "prefill_tokens_per_second": sorted(prefill)[len(prefill) // 2],
                      "decode_tokens_per_second": sorted(decode)[len(decode) // 2],
                      "prefill_runs": prefill, "decode_runs": decode}))


if __name__ == "__main__":
    main()
