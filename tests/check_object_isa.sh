#!/usr/bin/env bash
# Checks that a kernel object library was compiled for the instruction set it claims: the
# disassembly of its objects must contain one instruction pattern and must not contain another.
# A lost compile flag (AVX-512 code built as AVX2, or emulated code built with AVX-512) fails.
#
# usage: check_object_isa.sh "<obj1;obj2;...>" <must-contain regex|-> <must-not-contain regex|->
set -euo pipefail
IFS=';' read -r -a objects <<<"$1"
must="$2"
must_not="$3"
listing=$(objdump -d --no-show-raw-insn "${objects[@]}")
if [[ "$must" != "-" ]]; then
  count=$(grep -cE "$must" <<<"$listing" || true)
  if ((count == 0)); then
    echo "FAIL: no instruction matching '$must' in ${objects[*]}"
    exit 1
  fi
  echo "ok: $count instructions match '$must'"
fi
if [[ "$must_not" != "-" ]]; then
  count=$(grep -cE "$must_not" <<<"$listing" || true)
  if ((count != 0)); then
    echo "FAIL: $count instructions match '$must_not' in ${objects[*]}"
    grep -m 5 -E "$must_not" <<<"$listing" || true
    exit 1
  fi
  echo "ok: no instruction matches '$must_not'"
fi
