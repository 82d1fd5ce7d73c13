#!/usr/bin/env python3
"""Writes tests/golden/tokenizer_smollm2.json: llama.cpp's token ids for fixed texts.

llama.cpp (through PyPI llama-cpp-python) is the independent reference for src/model/tokenizer/;
tests/test_tokenizer.cpp reads the file and requires identical ids.

Usage: /opt/kvc-venv/bin/python scripts/golden/make_tokenizer_golden.py [MODEL.gguf] [OUT.json]
(defaults: models/SmolLM2-135M-Instruct.Q4_1.gguf, tests/golden/tokenizer_smollm2.json).
Each case holds the text (or text_hex for invalid UTF-8), parse_special, the expected ids
(add_bos=False) and llama.cpp's detokenization with special tokens rendered.
"""
import json
import pathlib
import sys

import llama_cpp

ROOT = pathlib.Path(__file__).resolve().parents[2]

PASSAGE = (
    "The lighthouse keeper's log for 14 March 1887 records a gale from the north-north-east, "
    "\"the worst in 23 years\", and notes that the lamp burned 3.5 gallons of oil between dusk "
    "and 06:40. Nobody on the island had expected it; the barometer stood at 29.92 inches at "
    "noon. By evening the supply boat (the Margaret, 41 tons) was overdue, and the keeper's "
    "daughter, aged 12, kept watch from the gallery while he trimmed the wicks.\n\n"
    "Modern readers often ask why the keepers didn't simply leave. The answer is partly "
    "economic - a keeper earned about £70 a year, plus coal and candles - and partly a matter "
    "of duty: a dark light could cost dozens of lives. Records from 1850-1900 show that fewer "
    "than 1% of stations ever went dark during a storm.\n\n"
    "    def lamp_hours(dusk, dawn):\n"
    "        \"\"\"Hours the lamp must burn; both times in minutes since midnight.\"\"\"\n"
    "        if dawn < dusk:\n"
    "            dawn += 24 * 60\n"
    "        return (dawn - dusk) / 60.0\n\n"
    "In French the keeper is le gardien de phare; in German, der Leuchtturmwärter; in Russian, "
    "смотритель маяка; in Japanese, 灯台守 (tōdaimori). Émile, a visiting engineer, wrote that "
    "\"la lumière ne s'éteint jamais\" - the light never goes out.\t(He was wrong twice.)\n"
    "Today the station is automated: a 1,000-watt LED array, a solar panel rated at 2.4 kW, and "
    "a modem that reports to the mainland every 15 minutes. Visitors can climb the 117 steps "
    "between April and October; tickets cost €8 for adults and €4 for children under 16. The "
    "old log books are kept in the museum's archive, room B-204, and may be consulted on "
    "request.   Please don't photograph them with flash!!! 🌊🚢 Thanks :)\n"
    "Summary: wind NNE 9-10, visibility < 1 nm, lamp lit 16:52, extinguished 06:40, "
    "oil used 3.5 gal, no casualties. Signed, J. McAllister (keeper).\n"
    "P.S. The relief keeper arrives Tuesday; he'll need the spare key (#7), the tide tables for "
    "1888, and a new glass for the north lantern - ours cracked at 03:15 when the temperature "
    "fell from 8°C to -2°C in under an hour. I've asked the Board twice. We'll see.\n"
)

TEXTS = [
    "",
    "Hello world",
    " Hello world",
    "Hello, world! How are you?",
    "HELLO World hello WORLD",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure you're right, they've said it's what we'll do and he'd agree.",
    "I'M SURE YOU'RE RIGHT; 'quoted' and ''double'' quotes",
    "3",
    "33",
    "333",
    "123456789",
    "Pi is 3.14159, e is 2.71828 and 1,000,000 is a million.",
    "Version v2.0.1-rc3 released on 2024-11-30 at 10:45:00Z",
    " ",
    "  ",
    "    ",
    "\t",
    "\n",
    "\n\n\n",
    "a  b   c    d",
    "line one\nline two\r\nline three\n\n\tindented\n",
    "trailing spaces   ",
    "   leading spaces",
    "\t\ttabs\tand \t mixed\t \n",
    "!!! ??? ... --- *** ### @@@",
    "(parentheses) [brackets] {braces} <angles>",
    "café naïve résumé Äpfel Straße fiancée",
    "你好，世界！我想在apple工作1314151天～",
    "Привет, мир! Как дела?",
    "مرحبا بالعالم",
    "こんにちは世界 カタカナ",
    "🦙 llama 🚀 rocket ✅ check",
    "👨‍👩‍👧‍👦 family 😶‍🌫️ face in clouds 🏳️‍🌈",
    "def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n",
    "for (int i = 0; i < n; ++i) { sum += x[i] * 2; }",
    '{"key": "value", "list": [1, 2, 3], "nested": {"a": null}}',
    "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
    "text before <|endoftext|> text after <|im_end|>",
    "<repo_name>kvcompress<file_sep>src/main.cpp",
    "<|im_start|<|im_end|><|im_end|><|im_start|>",
    PASSAGE,
]

# Texts tokenized with both parse_special values: the rest use parse_special=False only.
SPECIAL_TEXTS = {TEXTS[i] for i in range(len(TEXTS)) if "<" in TEXTS[i] and "|" in TEXTS[i]} | {
    "<repo_name>kvcompress<file_sep>src/main.cpp"
}

# Invalid UTF-8: llama.cpp replaces each bad byte by U+FFFD before tokenizing, but keeps
# overlong forms (decoded) and UTF-16 surrogates (as their bytes).
INVALID = [
    b"abc\xff\xfedef",
    b"trunc\xe2\x82",
    b"\xc3(lone lead) \x80 continuation",
    b"surrogate \xed\xa0\x80 and overlong \xc0\x80 nul",
]


def make_case(llm, raw: bytes, parse_special: bool) -> dict:
    ids = llm.tokenize(raw, add_bos=False, special=parse_special)
    detok = llm.detokenize(ids, special=True)
    case = {"parse_special": parse_special, "ids": ids}
    try:
        case["text"] = raw.decode("utf-8")
        case["detokenized"] = detok.decode("utf-8")
    except UnicodeDecodeError:
        case["text_hex"] = raw.hex()
        case["detokenized_hex"] = detok.hex()
    return case


def main() -> None:
    model = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    out = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "tests/golden/tokenizer_smollm2.json"
    llm = llama_cpp.Llama(model_path=str(model), vocab_only=True, verbose=False)

    cases = []
    for text in TEXTS:
        for parse_special in ([False, True] if text in SPECIAL_TEXTS else [False]):
            case = make_case(llm, text.encode("utf-8"), parse_special)
            if case["detokenized"] != text:
                print(f"warning: llama.cpp does not round-trip {text[:40]!r}", file=sys.stderr)
            cases.append(case)
    for raw in INVALID:
        cases.append(make_case(llm, raw, False))

    golden = {
        "generator": "scripts/golden/make_tokenizer_golden.py",
        "reference": f"llama-cpp-python {llama_cpp.__version__} (llama.cpp tokenize, add_bos=False)",
        "model": model.name,
        "cases": cases,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(golden, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main()
