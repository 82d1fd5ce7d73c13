"""What llama.cpp says about one prompt, in the format the golden tests read
(tests/golden_compare.h): token ids, top-1 and top-2 margin at checked positions, the final
top-k logits, and a greedy continuation with the top-2 margin at each step."""
import numpy as np
from llama_cpp import Llama


def top2_margin(logits: np.ndarray) -> float:
    top = np.partition(logits, -2)[-2:]
    return float(abs(top[1] - top[0]))


def reference_case(llm: Llama, prompt: dict, check_every: int, top_k: int,
                   greedy_tokens: int) -> dict:
    """prompt: {"name", "text", "special"}; llm must have logits_all=True."""
    ids = llm.tokenize(prompt["text"].encode(), add_bos=False, special=prompt["special"])
    llm.reset()
    llm.eval(ids)
    scores = np.array(llm.scores[: len(ids)], dtype=np.float32)  # [n_tokens, n_vocab]
    checked = sorted(set(range(check_every - 1, len(ids), check_every)) | {len(ids) - 1})
    positions = [{"position": i, "top1": int(np.argmax(scores[i])),
                  "margin": top2_margin(scores[i])} for i in checked]
    last = scores[-1]
    top = np.argsort(-last)[:top_k]
    greedy = []
    logits = last
    for _ in range(greedy_tokens):
        token = int(np.argmax(logits))
        greedy.append({"token": token, "margin": top2_margin(logits)})
        llm.eval([token])
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    return {
        "name": prompt["name"], "text": prompt["text"], "parse_special": prompt["special"],
        "ids": ids, "positions": positions,
        "final_top": [{"id": int(i), "logit": float(last[i])} for i in top],
        "greedy": greedy,
        "greedy_text": llm.detokenize([g["token"] for g in greedy]).decode(errors="replace"),
    }
