#!/bin/bash
# thread_safety.sh BUILD_DIR [DIR...]: compiles every source of the given folders (default:
# those whose shared state carries vpf/mutex.h's annotations) with clang and its
# thread-safety analysis as errors, using the build's own flags (compile_commands.json).
# Nothing is written; the exit status is clang's.
set -u
build="$1"; shift
root=$(cd "$(dirname "$0")/.." && pwd)
[ $# -gt 0 ] || set -- ovs_plugin/src agent/src/lib
command -v clang++ >/dev/null || { echo "thread_safety: clang++ is not installed"; exit 1; }
python3 - "$build/compile_commands.json" "$root" "$@" <<'PY'
import json, shlex, subprocess, sys, os
db, root, dirs = sys.argv[1], sys.argv[2], sys.argv[3:]
entries = json.load(open(db))
wanted = [os.path.join(root, d) + os.sep for d in dirs]
seen, failed = set(), 0
# GCC's own options that clang does not know.
drop_prefixes = ("-fno-fat-lto", "-flto", "-fconcepts-diagnostics")
for e in entries:
    f = os.path.realpath(e["file"])
    if not any(f.startswith(w) for w in wanted) or f in seen or not f.endswith(".cc"):
        continue
    seen.add(f)
    args = e.get("arguments") or shlex.split(e["command"])
    out = [a for a in args[1:] if not a.startswith(drop_prefixes)]
    # drop "-o OBJ" and "-c"
    cleaned, skip = [], False
    for a in out:
        if skip:
            skip = False
            continue
        if a == "-o":
            skip = True
            continue
        if a == "-c":
            continue
        cleaned.append(a)
    cmd = ["clang++", "-fsyntax-only", "-Wthread-safety", "-Werror=thread-safety", "-Wno-unknown-warning-option"] + cleaned
    r = subprocess.run(cmd, cwd=e["directory"], capture_output=True, text=True)
    if r.returncode != 0:
        failed += 1
        print(f"thread_safety: {os.path.relpath(f, root)}:\n{r.stderr}")
    else:
        print(f"ok: {os.path.relpath(f, root)}")
if not seen:
    print("thread_safety: no sources found under", dirs)
    sys.exit(1)
sys.exit(1 if failed else 0)
PY
