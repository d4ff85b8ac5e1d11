#!/usr/bin/env bash
# GPU check (issue 23): set up a CUDA venv, run the GPU tests, measure generation and training on the GPU.
#
#     bash benchmarks/gpu_check.sh            # from any directory; ~8 minutes in all
#     GPU_CHECK_BUDGET=900 bash benchmarks/gpu_check.sh   # more time, e.g. for the whole demo
#
# Needs: a bare x86-64 Linux machine with an NVIDIA GPU and its driver (`nvidia-smi` works); Python >= 3.11
# with its venv module (python3.11, 3.12, 3.13 or python3 on PATH, or PYTHON=/path/to/python); pip able to
# reach PyPI, or a wheel cache pip is pointed at (PIP_FIND_LINKS=/wheels PIP_NO_INDEX=1: it must hold a
# CUDA build of torch); about 15 GB free disk beside this checkout (the CUDA torch build is ~7 GB in the
# venv, plus pip's cache); about 8 minutes (GPU_CHECK_BUDGET seconds, default 480). Nothing else: no
# model weights or data are downloaded (every model is built from its config with random weights).
#
# What it does, each phase bounded with `timeout` by min(its cap, the time left in the budget):
#   0. preflight (seconds): NVIDIA GPU? (`nvidia-smi -L`; else exit 3 at once, before installing
#      anything), Python >= 3.11 with venv, free disk;
#   1. setup, mirroring `make setup` in a separate venv, .venv-gpu (the CPU venv .venv is never touched):
#      `pip install torch==2.13.0` (PyPI's Linux x86-64 wheel is the CUDA build), which must then see the
#      GPU (torch.cuda.is_available(), else exit 3), `pip install -e .[dev]`, `pip install --no-deps
#      resemblyzer==0.1.4`;
#   2. tests: `pytest -m gpu` (the tests marked gpu);
#   3. bench: benchmarks/gpu_bench.py (its docstring says what it measures): bf16 matmul peak, SD 1.5-size
#      generation at 512 px (B = 1, 8, 32; fp16, bf16; 20 DDIM steps with guidance), UNet FLOP/s, the
#      attention processor and SDPA backends, channels-last, an adapters-stage training step, the
#      disentangler stages' steps/s;
#   4. compile: torch.compile of the UNet call vs eager (B = 32, bf16) and a compiled generation, in its
#      own process, bounded (up to 170 s; a compile that does not finish in time is reported as such);
#   5. demo: `imagineid demo --quick --workdir <tmp>` on the GPU, its wall time, with the rest of the budget
#      (up to 300 s; cut short, the JSON says timed_out and the last demo step reached). At the default
#      budget, expect the demo to be cut; GPU_CHECK_BUDGET=900 leaves room for all of it.
#
# Prints: progress on stderr; one JSON object on stdout at the end, also written to $OUT/gpu_check.json
# when $OUT is set, else to benchmarks/gpu_check.json; each phase's log in gpu_check_logs/ beside it.
# JSON keys: ok, exit_code, budget_s, total_s, gpu (nvidia-smi), torch (the venv's torch and its device),
# phases (per phase: status ok|failed|timeout|skipped|present, seconds, limit_s, rc, log), tests
# (rc, summary), bench (gpu_bench.py's JSON, with its compile section from phase 4), demo (status,
# seconds, rc, last_step, report), json_path.
#
# Exit codes: 0 all phases ok (a bench section may still report its own error, see bench.*.error);
# 1 a phase failed or timed out (setup stops the run; tests, bench, demo and compile do not);
# 2 preflight: no Python >= 3.11 with venv, or too little disk; 3 no usable NVIDIA GPU: before anything
# is installed (no nvidia-smi, or it lists no GPU), or right after torch is (torch.cuda.is_available()
# false: a CPU-only torch build, or a driver too old for torch's CUDA).
# Environment: GPU_CHECK_BUDGET (seconds, 480), PYTHON, GPU_CHECK_TORCH (pip spec, "torch==2.13.0"),
# GPU_CHECK_VENV (.venv-gpu), GPU_CHECK_MIN_DISK_GB (15), GPU_CHECK_NVIDIA_SMI (nvidia-smi), OUT.

set -euo pipefail

SCRIPT_START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-480}
DEADLINE=$((SCRIPT_START + BUDGET))
SMI=${GPU_CHECK_NVIDIA_SMI:-nvidia-smi}

say() { echo "gpu_check: $*" >&2; }

# -- 0. preflight: the GPU first, so a machine without one installs nothing ----------------------------------
if ! command -v "$SMI" >/dev/null 2>&1; then
  say "no NVIDIA GPU: '$SMI' not found (needs an NVIDIA GPU and driver); nothing was installed"
  exit 3
fi
GPU_LIST=$(timeout 30 "$SMI" -L 2>&1) || true
if ! grep -q '^GPU [0-9]' <<<"$GPU_LIST"; then
  say "no NVIDIA GPU: '$SMI -L' lists none ($(head -n 1 <<<"$GPU_LIST" | cut -c 1-200)); nothing was installed"
  exit 3
fi
GPU_INFO=$(timeout 30 "$SMI" --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true)

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
[[ -f pyproject.toml && -f benchmarks/gpu_bench.py ]] || { say "not an imagineid checkout: $ROOT"; exit 2; }

PY=""
for cand in ${PYTHON:-} python3.11 python3.12 python3.13 python3; do
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    PY=$(command -v "$cand")
    break
  fi
done
[[ -n "$PY" ]] || { say "needs Python >= 3.11 (python3.11 .. python3 on PATH, or PYTHON=...)"; exit 2; }
"$PY" -c 'import venv, ensurepip' 2>/dev/null || { say "$PY has no venv/ensurepip module (Debian: apt-get install python3-venv)"; exit 2; }

VENV=${GPU_CHECK_VENV:-.venv-gpu}
VPY=$VENV/bin/python
MIN_DISK_GB=${GPU_CHECK_MIN_DISK_GB:-15}
free_kb=$(df -Pk "$ROOT" | awk 'NR == 2 {print $4}')
if [[ ! -x "$VPY" ]] && (( free_kb < MIN_DISK_GB * 1024 * 1024 )); then
  say "needs ~${MIN_DISK_GB} GB free disk for the CUDA venv, $((free_kb / 1024 / 1024)) GB free at $ROOT (GPU_CHECK_MIN_DISK_GB)"
  exit 2
fi
[[ "$(uname -m)" == x86_64 ]] || say "warning: $(uname -m), not x86-64: pip may find no CUDA torch build"

RESULT_DIR=${OUT:-$ROOT/benchmarks}
JSON_PATH=$RESULT_DIR/gpu_check.json
LOG_DIR=$RESULT_DIR/gpu_check_logs
mkdir -p "$LOG_DIR"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
PHASES=$WORK/phases.tsv
: >"$PHASES"

export HF_HUB_OFFLINE=1 PREFECT_SERVER_ANALYTICS_ENABLED=false RAY_USAGE_STATS_ENABLED=0
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

now() { date +%s.%N; }
left() { echo $((DEADLINE - $(date +%s) - 10)); }  # seconds left, keeping 10 for a kill and the JSON

# phase NAME CAP_S MIN_S CMD...: run CMD with stdout+stderr to $LOG_DIR/NAME.log, bounded by min(CAP_S,
# time left); skipped when less than MIN_S is left. Records the phase in $PHASES; returns CMD's status.
phase() {
  local name=$1 cap=$2 min=$3
  shift 3
  local limit rc=0 start status seconds
  limit=$(left)
  ((limit < cap)) || limit=$cap
  if ((limit < min)); then
    say "$name: skipped, $(left) s left in the budget"
    printf '%s\tskipped\t0\t%s\t\t\n' "$name" "$limit" >>"$PHASES"
    return 99
  fi
  say "$name: up to ${limit} s (log: $LOG_DIR/$name.log)"
  start=$(now)
  timeout --kill-after=5 "$limit" "$@" >"$LOG_DIR/$name.log" 2>&1 || rc=$?
  seconds=$(awk -v a="$start" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}')
  case $rc in
    0) status=ok ;;
    124 | 137) status=timeout ;;
    *) status=failed ;;
  esac
  say "$name: $status after ${seconds} s (rc $rc)"
  ((rc == 0)) || tail -n 5 "$LOG_DIR/$name.log" | sed 's/^/    /' >&2
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$seconds" "$limit" "$rc" "$LOG_DIR/$name.log" >>"$PHASES"
  return $rc
}

EXIT_CODE=0
finish() {  # finish CODE: assemble the JSON (stdout + $JSON_PATH) and exit
  local code=$1
  GPU_LIST="$GPU_LIST" GPU_INFO="$GPU_INFO" PHASES="$PHASES" WORK="$WORK" LOG_DIR="$LOG_DIR" \
    JSON_PATH="$JSON_PATH" BUDGET="$BUDGET" SCRIPT_START="$SCRIPT_START" CODE="$code" "$PY" - <<'PYEOF' || true
import json, os, re, time
from pathlib import Path

env, work, logs = os.environ, Path(os.environ["WORK"]), Path(os.environ["LOG_DIR"])
ansi = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None

def log_lines(name):
    try:
        return [ansi.sub("", l).rstrip() for l in (logs / f"{name}.log").read_text(errors="replace").splitlines()]
    except OSError:
        return []

phases = {}
for line in Path(env["PHASES"]).read_text().splitlines():
    name, status, seconds, limit, rc, log = (line.split("\t") + [""] * 6)[:6]
    phases[name] = {"status": status, "seconds": float(seconds or 0), "limit_s": int(limit or 0),
                    "rc": int(rc) if rc else None, "log": log or None}
code = int(env["CODE"])
result = {"ok": code == 0, "exit_code": code, "budget_s": int(env["BUDGET"]),
          "total_s": round(time.time() - int(env["SCRIPT_START"]), 1),
          "gpu": {"list": env["GPU_LIST"].strip().splitlines(), "query": env["GPU_INFO"].strip().splitlines()},
          "torch": read_json(work / "cuda.json"), "phases": phases}
if "tests" in phases:
    summary = [l for l in log_lines("tests") if re.search(r"\b(passed|failed|skipped|deselected|error|no tests ran)\b", l)]
    result["tests"] = {"rc": phases["tests"]["rc"], "summary": summary[-1] if summary else None}
bench = read_json(work / "bench.json")
compiled = read_json(work / "compile.json")
if bench is not None or compiled is not None:
    bench = bench or {}
    if compiled is not None and "compile" in compiled:
        bench["compile"] = compiled["compile"]
    elif "compile" in phases:
        status = phases["compile"]["status"]
        bench["compile"] = {"skipped": "budget"} if status == "skipped" else {"error": f"compile phase {status}"}
    result["bench"] = bench
if "demo" in phases:
    lines = log_lines("demo")
    steps = [l for l in lines if re.search(r"demo [1-5]/5", l)]
    report = [l for l in lines if "report →" in l]
    result["demo"] = {"status": phases["demo"]["status"], "seconds": phases["demo"]["seconds"],
                      "limit_s": phases["demo"]["limit_s"], "rc": phases["demo"]["rc"],
                      "timed_out": phases["demo"]["status"] == "timeout",
                      "last_step": steps[-1].strip() if steps else None,
                      "report": report[-1].strip() if report else None}
result["json_path"] = env["JSON_PATH"]
text = json.dumps(result, indent=2)
print(text)
Path(env["JSON_PATH"]).write_text(text + "\n")
PYEOF
  say "exit $code; JSON → $JSON_PATH"
  exit "$code"
}

# -- 1. setup ----------------------------------------------------------------------------------------------
if [[ -x "$VPY" ]]; then
  printf 'venv\tpresent\t0\t0\t0\t\n' >>"$PHASES"
else
  phase venv 60 10 "$PY" -m venv "$VENV" || finish 1
fi
TORCH_SPEC=${GPU_CHECK_TORCH:-torch==2.13.0}
if "$VPY" -c 'import sys, torch; sys.exit(torch.version.cuda is None)' >/dev/null 2>&1; then
  printf 'torch\tpresent\t0\t0\t0\t\n' >>"$PHASES"  # a CUDA torch already there: as `make setup` does
else
  phase torch 240 60 "$VPY" -m pip install --progress-bar off "$TORCH_SPEC" || finish 1
fi

cuda_rc=0
phase cuda 90 10 "$VPY" -c '
import json, sys, torch
ok = torch.cuda.is_available()
info = {"version": torch.__version__, "cuda": torch.version.cuda, "available": ok,
        "device": torch.cuda.get_device_name(0) if ok else None}
open(sys.argv[1], "w").write(json.dumps(info))
print(json.dumps(info))
sys.exit(0 if ok else 3)
' "$WORK/cuda.json" || cuda_rc=$?
if ((cuda_rc == 3)); then
  if grep -q '"cuda": null' "$WORK/cuda.json"; then
    say "no usable GPU: pip installed a CPU-only torch ($(cat "$WORK/cuda.json")), e.g. from a wheel cache" \
      "(PIP_FIND_LINKS); give pip PyPI or a CUDA build, then rm -r $VENV"
  else
    say "no usable GPU: torch.cuda.is_available() is false ($(cat "$WORK/cuda.json")): driver too old for this CUDA build?"
  fi
  finish 3
elif ((cuda_rc != 0)); then
  finish 1
fi
phase project 180 30 "$VPY" -m pip install --progress-bar off -e ".[dev]" || finish 1
phase resemblyzer 60 10 "$VPY" -m pip install --progress-bar off --no-deps "resemblyzer==0.1.4" || finish 1

# -- 2. tests marked gpu -----------------------------------------------------------------------------------
phase tests 120 20 "$VPY" -m pytest -q -m gpu -p no:cacheprovider tests || EXIT_CODE=1

# -- 3. bench (without compile: phase 4) -------------------------------------------------------------------
bench_limit=$(left)
((bench_limit < 200)) || bench_limit=200
phase bench 200 30 "$VPY" benchmarks/gpu_bench.py --device cuda --json-out "$WORK/bench.json" \
  --budget-s $((bench_limit - 15)) --sections peak,generation,attention,channels_last,adapters_step,disentangler \
  || EXIT_CODE=1

# -- 4. torch.compile vs eager (the bench bounds the compile child itself, 25 s inside the phase's limit) ----
compile_limit=$(left)
((compile_limit < 170)) || compile_limit=170
phase compile 170 80 "$VPY" benchmarks/gpu_bench.py --device cuda --json-out "$WORK/compile.json" \
  --sections compile --compile on --compile-timeout-s $((compile_limit - 25)) || EXIT_CODE=1

# -- 5. the demo, with what is left ------------------------------------------------------------------------
phase demo 300 30 "$VENV/bin/imagineid" demo --quick --workdir "$WORK/demo" || EXIT_CODE=1
rm -rf "$WORK/demo"

finish "$EXIT_CODE"
