"""Golden outputs of llama.cpp (PyPI llama-cpp-python) for SmolLM2 on fixed prompts.

Writes tests/golden/smollm2_llamacpp.json, read by tests/test_golden.cpp:
  - token ids of each prompt (llama.cpp's tokenizer);
  - at checked positions (every 32nd prompt token and the last): top-1 id and the margin
    between the top-2 logits;
  - at the final position: the top 64 (id, logit) pairs;
  - 32 greedy tokens continuing the prompt, each with the reference's top-2 margin at that step
    (near-ties may legitimately flip between implementations).

Run: /opt/kvc-venv/bin/python scripts/golden/make_model_golden.py   (llama-cpp-python==0.3.36)
"""
import gzip
import json
import os
import sys

from llama_cpp import Llama

sys.path.insert(0, os.path.dirname(__file__))
from golden_case import reference_case  # noqa: E402
from texts import austen_novels  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
OUT = os.path.join(ROOT, "tests", "golden", "smollm2_llamacpp.json")
GREEDY_TOKENS = 32
TOP_K = 64
CHECK_EVERY = 32


def long_text(source: str, n_tokens: int, llm: Llama) -> str:
    """About n_tokens tokens of real text, cut at a paragraph boundary."""
    paragraphs = source.split("\n\n")
    text = ""
    for p in paragraphs:
        candidate = text + p + "\n\n"
        if len(llm.tokenize(candidate.encode(), add_bos=False, special=False)) > n_tokens:
            break
        text = candidate
    return text


def prompts(llm: Llama) -> list[dict]:
    novels = austen_novels()
    pride = novels[4]
    emma = novels[0]
    jargon = gzip.open("/usr/share/doc/jargon-text/jargon.txt.gz", "rt", errors="replace").read()
    jargon = jargon[jargon.find("The Jargon Lexicon"):]
    chat = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
            "<|im_start|>assistant\n")
    return [
        {"name": "short", "text": "The capital of France is", "special": False},
        {"name": "chat", "text": chat, "special": True},
        {"name": "code", "text": "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
         "special": False},
        {"name": "austen_pride_2k", "text": long_text(pride[pride.find("Chapter 1"):], 2000, llm),
         "special": False},
        {"name": "austen_emma_2k", "text": long_text(emma[emma.find("CHAPTER I"):], 2000, llm),
         "special": False},
        {"name": "jargon_1k", "text": long_text(jargon, 1000, llm), "special": False},
    ]


def main() -> None:
    llm = Llama(model_path=MODEL, n_ctx=4096, n_batch=512, n_threads=2, logits_all=True,
                verbose=False, seed=0)
    cases = []
    for p in prompts(llm):
        cases.append(reference_case(llm, p, CHECK_EVERY, TOP_K, GREEDY_TOKENS))
        ids = cases[-1]["ids"]
        print(f"{p['name']}: {len(ids)} tokens; greedy: {cases[-1]['greedy_text']!r}")
    meta = {"generator": "llama-cpp-python " + __import__("llama_cpp").__version__,
            "model": os.path.basename(MODEL), "n_ctx": 4096, "n_batch": 512,
            "kv_type": "f16", "note": "produced by scripts/golden/make_model_golden.py"}
    with open(OUT, "w") as f:
        json.dump({"meta": meta, "cases": cases}, f, indent=None, separators=(",", ":"))
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
