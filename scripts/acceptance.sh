#!/usr/bin/env bash
# Checks docs/ACCEPTANCE.md against the test binaries: every criterion of the
# client acceptance contract has a row, every test a row names exists in
# `--list` of its binary, every bench group it names exists in bench/, and
# every MUST row names at least one test/bench or says `n/a: <reason>`.
#
# Cheap: `cargo test --workspace --no-run` (a no-op once `cargo test` built
# everything) gives the test executables, then each runs with `--list`,
# which lists without running (the same listing `cargo test -- --list`
# prints, doc tests left out: no row names one).
#
# Usage: scripts/acceptance.sh [--list-file FILE]
#   --list-file FILE  check against a saved listing instead of building
#                     (lines `<package>/<target>::<test>`, as `--dump` prints)
#   --dump            print the listing in that form and exit
set -euo pipefail
cd "$(dirname "$0")/.."

list_file=""
dump=0
while [ $# -gt 0 ]; do
    case "$1" in
        --list-file) list_file="$2"; shift 2 ;;
        --dump) dump=1; shift ;;
        *) echo "usage: $0 [--list-file FILE] [--dump]" >&2; exit 2 ;;
    esac
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if [ -z "$list_file" ]; then
    cargo metadata --no-deps --format-version 1 >"$tmp/metadata.json"
    cargo test --workspace --no-run --message-format=json -j "${FITZ_JOBS:-2}" \
        >"$tmp/artifacts.json"
    python3 - "$tmp/metadata.json" "$tmp/artifacts.json" >"$tmp/list.txt" <<'PY'
import json, os, subprocess, sys

meta = json.load(open(sys.argv[1]))
names = {p["manifest_path"]: p["name"] for p in meta["packages"]}
seen = set()
for line in open(sys.argv[2]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    if not m["profile"]["test"]:
        continue
    pkg = names.get(m["manifest_path"])
    if pkg is None:
        continue
    kind = m["target"]["kind"][0]
    target = "lib" if kind == "lib" else m["target"]["name"] if kind == "test" else f"{kind}-{m['target']['name']}"
    exe = m["executable"]
    if exe in seen:
        continue
    seen.add(exe)
    out = subprocess.run(
        [exe, "--list"],
        cwd=os.path.dirname(m["manifest_path"]),
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        sys.exit(f"acceptance: `{exe} --list` failed:\n{out.stderr}")
    for row in out.stdout.splitlines():
        if row.endswith(": test"):
            print(f"{pkg}/{target}::{row[: -len(': test')]}")
PY
    list_file="$tmp/list.txt"
fi

if [ "$dump" = 1 ]; then
    cat "$list_file"
    exit 0
fi

python3 - "$list_file" docs/ACCEPTANCE.md <<'PY'
import glob, re, sys

tests = set(l.strip() for l in open(sys.argv[1]) if l.strip())
doc = sys.argv[2]

# Every criterion of docs/clients/acceptance/*.md in cntryl/fitz: a row may
# not go missing without this list changing too.
expected = (
    [f"AC-CONN-{i:03}" for i in range(1, 7)]
    + [f"AC-KV-{i:03}" for i in range(1, 13)]
    + [f"AC-STREAM-{i:03}" for i in range(1, 16)]
    + [f"AC-QUEUE-{i:03}" for i in range(1, 10)]
    + [f"AC-NOTICE-{i:03}" for i in range(1, 10)]
    + [f"AC-RPC-{i:03}" for i in range(1, 9)]
    + [f"AC-LEASE-{i:03}" for i in range(1, 14)]
    + [f"AC-SCHEDULE-{i:03}" for i in range(1, 9)]
    + [f"AC-ERROR-{i:03}" for i in range(1, 5)]
    + [f"AC-PERF-{i:03}" for i in range(1, 7)]
)

bench_text = ""
for path in glob.glob("bench/benches/*.rs") + glob.glob("bench/src/*.rs"):
    bench_text += open(path).read()

errors = []
rows = {}
musts = shoulds = proven = na = 0
for n, line in enumerate(open(doc), 1):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if not line.startswith("| AC-"):
        continue
    where = f"{doc}:{n}"
    if len(cells) < 3:
        errors.append(f"{where}: a row needs | id | level | evidence | notes |")
        continue
    rid, level, evidence = cells[0], cells[1], cells[2]
    if rid in rows:
        errors.append(f"{where}: {rid} has a second row (first on line {rows[rid]})")
    rows[rid] = n
    if level not in ("MUST", "MUST NOT", "SHOULD"):
        errors.append(f"{where}: {rid}: level {level!r} is not MUST, MUST NOT or SHOULD")
    if level.startswith("MUST"):
        musts += 1
    else:
        shoulds += 1
    if evidence.startswith("n/a"):
        if not re.match(r"^n/a:\s*\S", evidence):
            errors.append(f"{where}: {rid}: `n/a` needs a reason (`n/a: why`)")
        na += 1
        continue
    entries = [e.strip().strip("`").strip() for e in re.split(r";|<br>", evidence)]
    entries = [e for e in entries if e]
    if not entries:
        errors.append(f"{where}: {rid} ({level}) names no test and gives no `n/a: reason`")
        continue
    proven += 1
    for e in entries:
        if e.startswith("bench:"):
            m = re.match(r"^bench:([A-Za-z0-9_]+)::([A-Za-z0-9_./-]+)$", e)
            if not m:
                errors.append(f"{where}: {rid}: bad bench entry {e!r} (bench:<file>::<group>)")
                continue
            file, group = m.groups()
            try:
                text = open(f"bench/benches/{file}.rs").read()
            except OSError:
                errors.append(f"{where}: {rid}: no bench file bench/benches/{file}.rs")
                continue
            if f'"{group}"' not in text and f'"{group}"' not in bench_text:
                errors.append(f"{where}: {rid}: no bench group {group!r} in bench/")
            continue
        if e not in tests:
            errors.append(f"{where}: {rid}: no test {e!r} in `cargo test -- --list`")

for rid in expected:
    if rid not in rows:
        errors.append(f"{doc}: no row for {rid}")
for rid in rows:
    if rid not in expected:
        errors.append(f"{doc}: {rid} is not a known criterion")

if errors:
    print("\n".join(errors), file=sys.stderr)
    print(f"acceptance: {len(errors)} problem(s) in {doc}", file=sys.stderr)
    sys.exit(1)
print(
    f"acceptance: {len(rows)} criteria ({musts} MUST, {shoulds} SHOULD): "
    f"{proven} with tests, {na} n/a; every named test exists"
)
PY
