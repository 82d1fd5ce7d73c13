#!/usr/bin/env python3
"""Writes a `kvc eval --tasks-file` JSONL of lookups unlike the built-in RULER recipes: other
haystacks (a software licence and Python source, not Austen or noise), other phrasings, and
facts inserted at depths spread over the context. Used to check that a compression setting
chosen on the built-in tasks is not fitted to their wording or haystack.

Kinds (equal counts, round robin):
  licence_fact  one sentence about a named archive room in the GNU GPL v3 text;
                asked for the room's number
  code_constant a module-level constant assigned in Python's argparse.py source;
                asked for its value
  licence_pair  four facts "<person> keeps the <object>" in the licence; asked who keeps
                one object (the others are distractors of the same form)

Usage: scripts/make_heldout_tasks.py --count 24 --chars 7000 --seed 1 > tasks.jsonl
(--chars: haystack characters per task, about 2K tokens at 7000 for these texts.)
"""
import argparse
import inspect
import json
import random
import sys

LICENCE = "/usr/share/common-licenses/GPL-3"

ROOMS = ["Hyperion", "Tamarisk", "Obsidian", "Lantern", "Meridian", "Juniper", "Cobalt",
         "Saffron", "Halcyon", "Vesper", "Quartz", "Marigold"]
PEOPLE = ["Ingrid Valdez", "Tomas Okafor", "Priya Lindqvist", "Marek Castellano",
          "Yuki Brennan", "Amara Novak", "Felix Oyelaran", "Selma Whitcombe"]
OBJECTS = ["brass telescope", "green ledger", "silver key ring", "oak chess set",
           "paper lantern", "copper kettle", "wool blanket", "glass paperweight"]
CONSTANTS = ["RETRY_BUDGET", "SHARD_WIDTH", "LEASE_SECONDS", "SPOOL_LIMIT", "BEACON_PORT",
             "DRAIN_INTERVAL", "CHECKPOINT_STRIDE", "QUORUM_SIZE"]


def window(text, chars, rng):
    """A window of `chars` characters starting at a line boundary."""
    start = rng.randrange(0, max(1, len(text) - chars))
    start = text.find("\n", start) + 1
    return text[start:start + chars]


def insert_at(text, sentence, depth):
    """`sentence` as its own paragraph at the line boundary nearest to depth * len(text)."""
    cut = text.rfind("\n", 0, int(depth * len(text))) + 1
    return text[:cut] + "\n" + sentence + "\n\n" + text[cut:]


def licence_fact(text, rng, depth):
    room, number = rng.choice(ROOMS), rng.randrange(1000, 10000)
    fact = f"A note from the archivist: the {room} collection is stored in room {number}."
    return {"context": insert_at(text, fact, depth),
            "question": f"In which room is the {room} collection stored? Answer with the number.",
            "answers": [str(number)], "name": "licence_fact"}


def code_constant(text, rng, depth):
    name, value = rng.choice(CONSTANTS), rng.randrange(100, 100000)
    return {"context": insert_at(text, f"{name} = {value}", depth),
            "question": f"What value is {name} set to in the code above? Answer with the number.",
            "answers": [str(value)], "name": "code_constant"}


def licence_pair(text, rng, depth):
    people, objects = rng.sample(PEOPLE, 4), rng.sample(OBJECTS, 4)
    depths = sorted(min(0.95, max(0.05, depth + rng.uniform(-0.3, 0.3))) for _ in range(4))
    for i in reversed(range(4)):  # last first, so earlier cuts keep their places
        text = insert_at(text, f"For the record, {people[i]} keeps the {objects[i]}.", depths[i])
    asked = rng.randrange(4)
    return {"context": text,
            "question": f"Who keeps the {objects[asked]}? Answer with the full name.",
            "answers": [people[asked]], "name": "licence_pair"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=24)
    ap.add_argument("--chars", type=int, default=7000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.count < 1 or args.chars < 500:
        sys.exit("make_heldout_tasks.py: --count must be >= 1 and --chars >= 500")
    rng = random.Random(args.seed)
    with open(LICENCE, encoding="utf-8") as f:
        licence = f.read()
    code = inspect.getsource(argparse)
    kinds = [(licence_fact, licence), (code_constant, code), (licence_pair, licence)]
    for i in range(args.count):
        make, source = kinds[i % len(kinds)]
        depth = 0.1 + 0.8 * (i // len(kinds)) / max(1, (args.count - 1) // len(kinds))
        task = make(window(source, args.chars, rng), rng, depth)
        task["max_new_tokens"] = 16
        print(json.dumps(task))


if __name__ == "__main__":
    main()
