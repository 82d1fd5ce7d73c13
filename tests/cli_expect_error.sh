#!/usr/bin/env bash
# Runs a command that must fail cleanly: exit status 1..127 (no crash, no signal) and stderr
# matching PATTERN.  Usage: cli_expect_error.sh PATTERN COMMAND [ARGS...]
pattern="$1"
shift
stderr="$("$@" 2>&1 >/dev/null)"
status=$?
if [ "$status" -eq 0 ] || [ "$status" -gt 127 ]; then
  echo "expected a clean failure, got exit status $status: $*" >&2
  exit 1
fi
if ! grep -Eq -- "$pattern" <<<"$stderr"; then
  echo "stderr does not match '$pattern':" >&2
  echo "$stderr" >&2
  exit 1
fi
echo "ok (exit $status): $stderr"
