"""benchmarks/gpu_check.sh and benchmarks/gpu_bench.py (issue 23): the GPU check, exercised without a GPU.

- the script parses (`bash -n`), and on a machine without an NVIDIA GPU stops at once with exit code 3
  and one line, before creating anything;
- its phases, budget and final JSON, with fake `nvidia-smi`, venv python and `imagineid` standing in for
  the GPU machine (nothing is installed; the real bench is the next test);
- `gpu_bench.py --quick --device cpu` runs every section end to end at tiny sizes;
- tests marked `gpu` (what the script's `pytest -m gpu` runs): skipped without CUDA, on a GPU one SD 1.5
  UNet call at 512 px in fp16 and a short bf16 generation.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
BENCH = ROOT / "benchmarks" / "gpu_bench.py"


def load_bench():
    """benchmarks/gpu_bench.py as a module (benchmarks/ is no package)."""
    if "gpu_bench" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_bench", BENCH)
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_bench"] = module  # its dataclasses look their module up while being defined
        spec.loader.exec_module(module)
    return sys.modules["gpu_bench"]


def checkout_copy(tmp_path: Path) -> Path:
    """The files the script looks at, in a scratch checkout: whatever it creates lands there."""
    root = tmp_path / "checkout"
    (root / "benchmarks").mkdir(parents=True)
    for rel in ("benchmarks/gpu_check.sh", "benchmarks/gpu_bench.py", "pyproject.toml"):
        shutil.copy(ROOT / rel, root / rel)
    return root


def script_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "GPU_CHECK_VENV", "GPU_CHECK_BUDGET")}
    env.update(extra)
    return env


def test_script_parses():
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    head = SCRIPT.read_text().splitlines()[:40]
    assert "set -euo pipefail" in SCRIPT.read_text()
    for need in ("NVIDIA", "Python >= 3.11", "PyPI", "8 minutes", "disk", "Prints"):
        assert any(need in line for line in head), f"header does not document {need!r}"


def run_script(root: Path, env: dict, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    done = subprocess.run(
        ["bash", str(root / "benchmarks" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )
    return done, time.perf_counter() - start


def assert_nothing_created(root: Path) -> None:
    assert sorted(p.name for p in root.iterdir()) == ["benchmarks", "pyproject.toml"]
    assert sorted(p.name for p in (root / "benchmarks").iterdir()) == ["gpu_bench.py", "gpu_check.sh"]


def test_no_gpu_exits_3_before_installing(tmp_path):
    """Any machine: nvidia-smi pointed at a missing file. Run from another directory."""
    root = checkout_copy(tmp_path)
    done, seconds = run_script(
        root, script_env(GPU_CHECK_NVIDIA_SMI=str(tmp_path / "missing" / "nvidia-smi")), cwd=tmp_path
    )
    assert done.returncode == 3, done.stderr
    assert seconds < 30
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no NVIDIA GPU" in lines[0] and "nothing was installed" in lines[0]
    assert done.stdout == ""
    assert_nothing_created(root)


def test_no_gpu_listed_exits_3(tmp_path):
    """An nvidia-smi that finds no device (driver without a GPU) counts as no GPU."""
    root = checkout_copy(tmp_path)
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'No devices were found'\nexit 6\n")
    smi.chmod(0o755)
    done, _ = run_script(root, script_env(GPU_CHECK_NVIDIA_SMI=str(smi)), cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    assert "No devices were found" in done.stderr
    assert_nothing_created(root)


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has nvidia-smi")
def test_no_gpu_here_exits_3(tmp_path):
    """This machine as it is (no nvidia-smi on PATH)."""
    root = checkout_copy(tmp_path)
    done, seconds = run_script(root, script_env(), cwd=root / "benchmarks")
    assert done.returncode == 3 and "no NVIDIA GPU" in done.stderr
    assert seconds < 30
    assert not (root / ".venv-gpu").exists()
    assert_nothing_created(root)


FAKE_PYTHON = r"""#!/usr/bin/env bash
# stands in for .venv-gpu/bin/python: every call is logged, nothing is installed
echo "$*" >> "$FAKE_LOG"
last=${@: -1}
case "$*" in
  *"sys.exit(torch.version.cuda is None)"*) exit 0 ;;
  "-m pip install"*) echo "fake pip: $*"; exit 0 ;;
  *"torch.cuda.is_available()"*)
    echo '{"version": "2.13.0", "cuda": "13.0", "available": true, "device": "NVIDIA H100 80GB HBM3"}' > "$last"
    exit 0 ;;
  "-m pytest"*) echo "1 passed, 30 deselected in 2.00s"; exit "${FAKE_PYTEST_RC:-0}" ;;
  *gpu_bench.py*)
    out=""; prev=""
    for a in "$@"; do [[ "$prev" == --json-out ]] && out=$a; prev=$a; done
    if [[ "$*" == *"--sections compile"* ]]; then
      echo '{"compile": {"mode": "reduce-overhead", "compile_speedup": 1.2}}' > "$out"
    else
      echo '{"mode": "full", "generation": {"runs": [{"dtype": "bf16", "batch": 32, "frames_per_s": 10.0}]}}' > "$out"
    fi
    exit 0 ;;
esac
echo "fake python: unexpected call: $*" >&2
exit 97
"""


def fake_gpu_machine(tmp_path: Path) -> tuple[Path, dict]:
    """A scratch checkout whose venv, nvidia-smi and imagineid are stand-ins, and the script's env."""
    root = checkout_copy(tmp_path)
    bin_dir = root / ".venv-gpu" / "bin"
    bin_dir.mkdir(parents=True)
    fakes = {
        bin_dir / "python": FAKE_PYTHON,
        bin_dir / "imagineid": '#!/bin/sh\necho "$*" >> "$FAKE_LOG"\necho \'demo 1/5 synth: 8 training clips\'\n'
        "echo 'demo 5/5 evaluate: 4 videos'\necho 'report → /x/gen/report.html'\n",
        tmp_path / "nvidia-smi": textwrap.dedent("""\
            #!/bin/sh
            case "$1" in
              -L) echo 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-fake)' ;;
              *) echo 'NVIDIA H100 80GB HBM3, 81559 MiB, 580.159.04' ;;
            esac
            """),
    }
    for path, text in fakes.items():
        path.write_text(text)
        path.chmod(0o755)
    env = script_env(
        GPU_CHECK_NVIDIA_SMI=str(tmp_path / "nvidia-smi"),
        PYTHON=sys.executable,
        FAKE_LOG=str(tmp_path / "calls.log"),
        OUT=str(tmp_path / "out"),
    )
    (tmp_path / "out").mkdir()
    return root, env


def test_phases_and_json_on_a_fake_gpu_machine(tmp_path):
    root, env = fake_gpu_machine(tmp_path)
    done, _ = run_script(root, env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result == json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert result["ok"] is True and result["exit_code"] == 0 and result["budget_s"] == 480
    assert result["gpu"]["list"] == ["GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-fake)"]
    assert result["torch"]["available"] is True
    phases = result["phases"]
    assert list(phases) == ["venv", "torch", "cuda", "project", "resemblyzer", "tests", "bench", "compile", "demo"]
    assert phases["venv"]["status"] == phases["torch"]["status"] == "present"  # a CUDA torch already there
    assert all(phases[p]["status"] == "ok" for p in list(phases)[2:])
    assert all(0 < phases[p]["limit_s"] <= 300 for p in list(phases)[2:])
    assert result["tests"] == {"rc": 0, "summary": "1 passed, 30 deselected in 2.00s"}
    assert result["bench"]["generation"]["runs"][0]["frames_per_s"] == 10.0
    assert result["bench"]["compile"]["compile_speedup"] == 1.2
    assert result["demo"]["status"] == "ok" and not result["demo"]["timed_out"]
    assert result["demo"]["last_step"].startswith("demo 5/5")
    assert (tmp_path / "out" / "gpu_check_logs" / "bench.log").exists()
    calls = (tmp_path / "calls.log").read_text()
    assert "-m pip install --progress-bar off -e .[dev]" in calls
    assert "--no-deps resemblyzer==0.1.4" in calls
    assert "-m pytest -q -m gpu" in calls
    assert "demo --quick --workdir" in calls
    assert "torch==2.13.0" not in calls  # present already: not reinstalled


def test_failures_and_budget_are_reported(tmp_path):
    """Failing gpu tests do not stop the bench; a budget too short for the compile skips it; exit 1."""
    root, env = fake_gpu_machine(tmp_path)
    done, _ = run_script(root, {**env, "FAKE_PYTEST_RC": "1", "GPU_CHECK_BUDGET": "70"}, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] is False and result["exit_code"] == 1
    assert result["phases"]["tests"]["status"] == "failed" and result["tests"]["rc"] == 1
    assert result["phases"]["bench"]["status"] == "ok"
    assert result["phases"]["compile"]["status"] == "skipped" and result["bench"]["compile"] == {"skipped": "budget"}
    assert result["phases"]["demo"]["status"] == "ok" and result["phases"]["demo"]["limit_s"] <= 65


def test_table_peak():
    bench = load_bench()
    assert bench.table_peak("NVIDIA H100 80GB HBM3") == (989.0, "H100 SXM")
    assert bench.table_peak("NVIDIA H100 PCIe")[0] == 756.0
    assert bench.table_peak("NVIDIA H200") == (989.0, "H200 SXM")
    assert bench.table_peak("Some Other GPU") == (None, None)


def test_bench_quick_on_cpu(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--device", "cpu", "--json-out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result == json.loads(out.read_text())
    assert result["mode"] == "quick" and result["device"]["type"] == "cpu"
    errors = {k: v["error"] for k, v in result.items() if isinstance(v, dict) and "error" in v}
    assert not errors
    assert result["peak"]["measured_tflops"] > 0
    gen = result["generation"]
    assert gen["unet_flops_per_call"]["1"] > 0
    (run,) = gen["runs"]
    assert run["dtype"] == "fp32" and run["batch"] == 1 and run["unet_rows"] == 2
    assert run["finite"] and run["frames_per_s"] > 0 and run["unet_tflops"] > 0
    assert 0 < run["unet_fraction_of_measured_peak"]
    attention = result["attention"]
    assert attention["processors"] == ["AttnProcessor2_0"]  # diffusers' SDPA processor by default
    assert attention["sdpa_backends"]["math"]["unet_call_s"] > 0 and attention["sdpa_speedup_over_classic"] > 0
    assert result["channels_last"]["channels_last_speedup"] > 0
    for variant in ("unet_adapter", "with_blending"):
        assert result["adapters_step"][variant]["finite_loss"] and result["adapters_step"][variant]["step_s"] > 0
    for stage in ("identity", "content", "emotion"):
        assert result["disentangler"][stage]["steps_per_s"] > 0
    assert "skipped" in result["compile"]


def test_bench_casts_modules_for_half_precision(tmp_path):
    """The fp16 / bf16 path (modules cast, FLOPs counted on the cast UNet), here bf16 at tiny sizes."""
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--device", "cpu", "--dtypes", "bf16", "--sections", "generation"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = json.loads(done.stdout)["generation"]["runs"]
    assert run["dtype"] == "bf16" and "error" not in run and run["frames_per_s"] > 0


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@needs_cuda
def test_gpu_sd15_unet_fp16_512px():
    bench = load_bench()
    sizes = bench.make_sizes(bench.argparse.Namespace(quick=False, vae_chunk=8, steps=None, batches=None, dtypes=None))
    device = torch.device("cuda")
    models = bench.build_models(sizes, device, torch.float16, parts=("unet",))
    assert sum(p.numel() for p in models.unet.parameters()) == 859_520_964  # SD 1.5's UNet
    assert bench.attention_processors(models.unet) == ["AttnProcessor2_0"]
    latents, t, text = bench.unet_inputs(sizes, 2, device, torch.float16)
    with torch.inference_mode():
        out = models.unet(latents, t, encoder_hidden_states=text).sample
    assert out.shape == (2, 4, 64, 64) and out.dtype == torch.float16
    assert torch.isfinite(out).all()


@pytest.mark.gpu
@needs_cuda
def test_gpu_generation_bf16_512px():
    bench = load_bench()
    sizes = bench.make_sizes(bench.argparse.Namespace(quick=False, vae_chunk=8, steps=2, batches="1", dtypes="bf16"))
    device = torch.device("cuda")
    models = bench.build_models(sizes, device, torch.bfloat16)
    images = bench.generate(models, sizes, 2, sizes.steps, device, torch.bfloat16)
    assert images.shape == (2, 3, 512, 512) and torch.isfinite(images).all()
