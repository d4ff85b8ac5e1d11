"""Operations (issue 8): deployments on a Prefect server with a process worker, Ray cluster mode, fault
tolerance. The commands are the ones docs/operations.md gives (make server / deploy / worker / ray-head,
prefect deployment run / schedule, imagineid train --ray-address); only ports and folders differ."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from conftest import copy_videos

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEPLOYMENTS = {
    "preprocess/nightly": "flows/preprocess.py",
    "train/on-demand": "flows/train.py",
    "generate/weekly-eval": "flows/generate.py",
    "evaluate/weekly-eval": "flows/evaluate.py",
}


# -- helpers: free ports, background commands that are always cleaned up ----------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a command from the repository root; fail the test with its output when it fails."""
    done = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False
    )
    assert done.returncode == 0, f"{' '.join(cmd)} → {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _stop(proc: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM the command make started (it shuts down its own children), then SIGKILL whatever is left of
    the whole tree: make, the command and every process they started."""
    try:
        tree = psutil.Process(proc.pid)
        family = [tree, *tree.children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for child in [p for p in family[1:] if p.ppid() == proc.pid]:
        try:
            child.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    for p in family:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=10)
    proc.wait(10)


@contextmanager
def background(cmd: list[str], env: dict, log: Path, ready: str | None = None, timeout: float = 180):
    """Start `cmd` (a make target) in its own session; yield once `ready` shows in its log; always stop it."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while ready and ready not in log.read_text(errors="replace"):
            assert proc.poll() is None, f"{' '.join(cmd)} exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"{' '.join(cmd)} not ready in {timeout}s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield proc
    finally:
        _stop(proc)


def ops_env(tmp: Path, **extra: str) -> dict:
    """The environment of every command: a private Prefect home (never the user's database)."""
    env = dict(
        os.environ,
        PREFECT_HOME=str(tmp / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        RAY_USAGE_STATS_ENABLED="0",
        HF_HUB_OFFLINE="1",
        PREFECT_WORKER_QUERY_SECONDS="2",
    )
    env.pop("PREFECT_API_URL", None)
    env.pop("RAY_ADDRESS", None)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`make server` on a free port of 127.0.0.1, with its own PREFECT_HOME; yields (api_url, env, port)."""
    tmp = tmp_path_factory.mktemp("prefect")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = ops_env(tmp, PREFECT_API_URL=url)
    env["PREFECT_AUTH_FILE"] = str(tmp / "private" / "prefect_auth")
    with background(["make", "server", f"PREFECT_PORT={port}"], env, tmp / "server.log"):
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code in (200, 401):
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp / "server.log").read_text()[-3000:]
            time.sleep(1)
        auth_file = Path(env["PREFECT_AUTH_FILE"])
        assert auth_file.stat().st_mode & 0o777 == 0o600  # created by make server, private
        AUTH[url] = auth_file.read_text().strip()
        env["PREFECT_API_AUTH_STRING"] = AUTH[url]  # what every client of the server sets
        yield url, env, port
        # flows run in this process sent logs and events to the server: deliver them before it stops
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=10)
        EventsWorker.drain_all(timeout=10)


def settled(folder: Path) -> None:
    """Date the files back past the nightly deployment's settle time: copied in long ago, not still arriving."""
    past = time.time() - 3600
    for path in folder.iterdir():
        os.utime(path, (past, past))


AUTH: dict[str, str] = {}  # the server fixture's auth string, by API URL


def api(url: str, method: str, path: str, body: dict | None = None):
    user, password = AUTH[url].split(":", 1)
    response = httpx.request(method, f"{url}{path}", json=body, timeout=30, auth=(user, password))
    response.raise_for_status()
    return response.json()


# -- fast checks: policy, prefect.yaml, summary, incremental preprocessing --------------------------------


def test_transient_failures_are_retried_and_input_errors_are_not() -> None:
    import ray.exceptions

    from imagineid.errors import ImagineIDError
    from tasks.policy import is_transient

    assert is_transient(OSError(errno.EIO, "input/output error"))
    assert is_transient(OSError(errno.ESTALE, "stale file handle"))
    assert is_transient(ConnectionResetError()) and is_transient(TimeoutError())
    assert is_transient(ray.exceptions.WorkerCrashedError()) and is_transient(ray.exceptions.NodeDiedError("n"))
    assert not is_transient(FileNotFoundError(errno.ENOENT, "missing"))
    assert not is_transient(ImagineIDError("no face")) and not is_transient(ValueError("bad"))


def test_ray_fan_out_keeps_a_bounded_window_in_flight_and_the_input_order() -> None:
    import ray

    from imagineid.parallel import parallel_map

    def _tenfold(x: int) -> int:  # defined here: Ray ships it by value (the tests folder is no package)
        if x == 7:
            raise ValueError("seven is a bad input")
        return 10 * x

    peak: list[int] = []
    try:
        out = parallel_map(
            _tenfold, list(range(40)), workers=2, progress=False, max_in_flight=3, peak=peak, on_error=lambda x, e: -x
        )
    finally:
        ray.shutdown()
    assert out == [-7 if x == 7 else 10 * x for x in range(40)]
    assert peak and max(peak) <= 3 and len(peak) == 40


def test_parallel_map_turns_a_lost_item_into_a_result() -> None:
    from imagineid.parallel import parallel_map

    def fn(x: int) -> int:
        if x == 2:
            raise OSError(errno.EIO, "lost")
        return x * 10

    assert parallel_map(fn, [1, 2, 3], workers=1, progress=False, on_error=lambda x, e: -x) == [10, -2, 30]
    with pytest.raises(OSError):
        parallel_map(fn, [1, 2, 3], workers=1, progress=False)


def test_prefect_yaml_matches_the_flows_and_has_no_absolute_paths() -> None:
    import importlib
    import inspect

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    assert "/work/" not in (REPO / "prefect.yaml").read_text()
    seen = set()
    for d in spec["deployments"]:
        path, function = d["entrypoint"].split(":")
        assert d["work_pool"]["name"] == "process" and d["enforce_parameter_schema"] is True
        for value in json.dumps(d["parameters"]).split('"'):
            assert not value.startswith("/"), value
        if not (REPO / path).exists():  # a flow still being written (generate, evaluate)
            seen.add(f"{Path(path).stem}/{d['name']}")
            continue
        flow = getattr(importlib.import_module(path[:-3].replace("/", ".")), function)
        seen.add(f"{flow.name}/{d['name']}")
        assert set(d["parameters"]) <= set(inspect.signature(flow.fn).parameters), d["name"]
    assert seen == set(DEPLOYMENTS)
    schedules = {f"{Path(d['entrypoint']).stem}/{d['name']}": d.get("schedules") for d in spec["deployments"]}
    assert schedules["preprocess/nightly"][0]["cron"] == "0 2 * * *"
    assert schedules["generate/weekly-eval"][0]["cron"] == "0 3 * * 0"


def test_evaluation_follows_generation_and_not_itself() -> None:
    from datetime import UTC, datetime
    from uuid import uuid4

    from prefect.cli.deploy._triggers import _initialize_deployment_triggers
    from prefect.server.events.schemas.automations import EventTrigger
    from prefect.server.events.schemas.events import ReceivedEvent

    spec = next(
        d
        for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
        if d["entrypoint"].startswith("flows/evaluate.py")
    )
    [deployed] = _initialize_deployment_triggers("weekly-eval", spec["triggers"])  # as `prefect deploy` reads it
    trigger = EventTrigger.model_validate(
        deployed.model_dump(
            mode="json",
            include={"match", "match_related", "expect", "after", "for_each", "posture", "threshold", "within"},
        )
    )

    def completed(flow: str, deployment: str) -> ReceivedEvent:
        return ReceivedEvent(
            occurred=datetime.now(UTC),
            event="prefect.flow-run.Completed",
            id=uuid4(),
            resource={"prefect.resource.id": f"prefect.flow-run.{uuid4()}"},
            related=[
                {
                    "prefect.resource.id": f"prefect.flow.{uuid4()}",
                    "prefect.resource.role": "flow",
                    "prefect.resource.name": flow,
                },
                {
                    "prefect.resource.id": f"prefect.deployment.{uuid4()}",
                    "prefect.resource.role": "deployment",
                    "prefect.resource.name": deployment,
                },
            ],
        )

    assert trigger.covers(completed("generate", "weekly-eval"))
    assert not trigger.covers(completed("evaluate", "weekly-eval"))  # no loop
    assert not trigger.covers(completed("generate", "adhoc"))


def test_summary_lists_every_failure() -> None:
    from tasks.summary import summary_markdown

    text = summary_markdown(
        "preprocess → d",
        {"sources": 3, "processed": 1},
        [{"source": "a|b.mp4", "status": "lost", "message": "worker\ndied"}],
    )
    assert "| 3 | 1 |" in text and "## Failures (1)" in text and "| a\\|b.mp4 | lost | worker died |" in text
    assert "none" in summary_markdown("t", {"n": 0}, [])


def test_a_changed_source_replaces_its_clip(small_corpus: Path, tmp_path: Path) -> None:
    from imagineid.data.store import Store
    from imagineid.preprocessing import preprocess

    first, second = sorted((small_corpus / "videos").glob("*.mp4"))[:2]
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy2(first, src / "clip.mp4")
    preprocess([src], tmp_path / "d", workers=1, progress=False)
    before = Store(tmp_path / "d").done_ids("clips")
    shutil.copy2(second, src / "clip.mp4")  # same path, new content
    summary = preprocess([src], tmp_path / "d", workers=1, progress=False)
    after = Store(tmp_path / "d").done_ids("clips")
    assert summary.n_processed == 1 and len(before) == len(after) == 1 and before != after
    assert not list((tmp_path / "d" / "frames").glob(f"{before.pop()}*"))
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert [e["clip_id"] for e in manifest["sources"].values()] == list(after)


# -- acceptance: server + worker, Ray cluster, a killed Ray task ------------------------------------------


@pytest.mark.slow
def test_nightly_preprocess_runs_on_a_server_through_a_process_worker(
    server, small_corpus: Path, tmp_path: Path
) -> None:
    url, env, port = server
    anonymous = httpx.post(f"{url}/deployments/filter", json={}, timeout=10)
    assert anonymous.status_code == 401  # the API refuses whoever lacks the auth string
    work = tmp_path / "work"
    first, *others = [v.name for v in sorted((small_corpus / "videos").glob("*.mp4"))]
    copy_videos(small_corpus, work / "incoming", [first])
    settled(work / "incoming")
    existing = [name for name, path in DEPLOYMENTS.items() if (REPO / path).exists()]
    deploy = "--all"
    if len(existing) < len(DEPLOYMENTS):  # a flow still being written: deploy the others by name
        specs = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
        deploy = " ".join(
            f"--name {d['entrypoint'].split(':')[1]}/{d['name']}"
            for d in specs  # prefect matches
            if (REPO / d["entrypoint"].split(":")[0]).exists()
        )  # function/deployment
    run(["make", "deploy", f"PREFECT_PORT={port}", f"IMAGINEID_WORK={work}", f"DEPLOY={deploy}"], env)

    deployments = {}
    for d in api(url, "POST", "/deployments/filter", {}):
        flow = api(url, "GET", f"/flows/{d['flow_id']}")["name"]
        deployments[f"{flow}/{d['name']}"] = d
    assert set(deployments) == set(existing)
    nightly = deployments["preprocess/nightly"]
    assert [(s["schedule"]["cron"], s["active"]) for s in nightly["schedules"]] == [("0 2 * * *", True)]
    assert nightly["parameters"] == {"sources": [f"{work}/incoming"], "out": f"{work}/data", "settle_seconds": 300}
    assert {"sources", "out", "workers", "ray_address"} <= set(nightly["parameter_openapi_schema"]["properties"])
    assert deployments["train/on-demand"]["schedules"] == []
    if "generate/weekly-eval" in deployments:
        assert deployments["generate/weekly-eval"]["schedules"][0]["schedule"]["cron"] == "0 3 * * 0"
    assert api(url, "GET", "/concurrency_limits/tag/gpu")["concurrency_limit"] == 1
    assert api(url, "GET", "/work_pools/process")["type"] == "process"

    nightly_run = [str(BIN / "prefect"), "deployment", "run", "preprocess/nightly", "--watch", "--watch-timeout", "600"]
    with background(["make", "worker", f"PREFECT_PORT={port}"], env, tmp_path / "worker.log", ready="started"):
        run(nightly_run, env, timeout=660)
        runs = api(url, "POST", "/flow_runs/filter", {"deployments": {"id": {"any_": [nightly["id"]]}}})
        assert [r["state_type"] for r in runs if r["state_type"] != "SCHEDULED"] == ["COMPLETED"]
        assert len(list((work / "data" / "clips").glob("*.parquet"))) == 1

        copy_videos(small_corpus, work / "incoming", others)  # the next night: new sources (Ray fan-out)
        settled(work / "incoming")
        run(nightly_run, env, timeout=660)
        assert len(list((work / "data" / "clips").glob("*.parquet"))) == 6
        [summary] = api(
            url,
            "POST",
            "/artifacts/filter",
            {"artifacts": {"key": {"any_": ["preprocess-summary"]}}, "sort": "CREATED_DESC", "limit": 1},
        )
        assert "| 6 | 1 | 5 | 0 | 0 |" in summary["data"]  # sources, skipped, processed, rejected, lost

        run(
            [
                str(BIN / "prefect"),
                "deployment",
                "run",
                "train/on-demand",
                "--param",
                "stages=identity",
                "--param",
                "max_steps=2",
                "--watch",
                "--watch-timeout",
                "600",
            ],
            env,
            timeout=660,
        )
        assert (work / "runs" / "main" / "identity" / "done.json").exists()

    # pause and resume schedules as the guide says; the API shows the result
    schedule = [str(BIN / "prefect"), "deployment", "schedule"]

    def active(deployment: str) -> list[bool]:
        return [s["active"] for s in api(url, "GET", f"/deployments/{deployments[deployment]['id']}")["schedules"]]

    schedule_id = json.loads(run([*schedule, "ls", "preprocess/nightly", "--output", "json"], env).stdout)[0]["id"]
    run([*schedule, "pause", "preprocess/nightly", schedule_id], env)
    assert active("preprocess/nightly") == [False]
    run([*schedule, "resume", "preprocess/nightly", schedule_id], env)
    assert active("preprocess/nightly") == [True]
    run([*schedule, "pause", "--all"], env)
    assert not any(flag for d in deployments for flag in active(d))


def ray_head(port: int, ray_tmp: str, dashboard: int | None = None, *extra: str) -> list[str]:
    """`make ray-head` with one CPU on free ports. The private Ray temp dir (short: socket paths are limited
    to ~107 bytes) keeps this head out of /tmp/ray/ray_current_cluster, which other Ray users would read."""
    ports = [f"RAY_CLIENT_PORT={free_port()}", f"RAY_AGENT_PORT={free_port()}"]
    ports.append(f"RAY_DASHBOARD_PORT={dashboard or free_port()}")
    return ["make", "ray-head", f"RAY_PORT={port}", *ports, f"RAY_ARGS=--num-cpus 1 --temp-dir {ray_tmp}", *extra]


@pytest.mark.slow
def test_training_joins_a_ray_cluster_started_with_make_ray_head(small_corpus: Path, tmp_path: Path) -> None:
    from imagineid.preprocessing import preprocess

    preprocess([small_corpus / "videos"], tmp_path / "data", workers=1, progress=False)
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = ops_env(tmp_path, RAY_AUTH_MODE="token", RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
    ray_tmp = tempfile.mkdtemp(prefix="ray-")
    head = ray_head(port, ray_tmp)
    try:
        with background(head, env, tmp_path / "ray-head.log", ready="Ray runtime started"):
            done = run(
                [
                    str(BIN / "imagineid"),
                    "train",
                    str(tmp_path / "data"),
                    "--out",
                    str(tmp_path / "run"),
                    "--stages",
                    "identity",
                    "--max-steps",
                    "2",
                    "--ray-address",
                    address,
                ],
                env,
            )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert "Connecting to existing Ray cluster at address: " in done.stderr
    assert (tmp_path / "run" / "identity" / "done.json").exists()


@pytest.mark.slow
def test_generation_runs_on_a_make_ray_head_and_make_ray_worker_pair(
    trained_run: Path, small_corpus: Path, tmp_path: Path
) -> None:
    """The operations guide's cluster on one machine: a head without GPUs and a worker node that declares
    one, joined by `imagineid generate --ray-address`; the GPU worker pulls every file from the queue."""
    import httpx

    port, dashboard = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    env = ops_env(tmp_path, RAY_AUTH_MODE="token", RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
    ray_tmp = tempfile.mkdtemp(prefix="ray-")
    head = ray_head(port, ray_tmp, dashboard, "RAY_NODE_IP=127.0.0.1")
    worker = ["make", "ray-worker", f"RAY_ADDRESS={address}", f"RAY_AGENT_PORT={free_port()}", "RAY_NODE_IP=127.0.0.1"]
    worker.append("RAY_ARGS=--num-cpus 1 --num-gpus 1")
    audio = sorted((small_corpus / "videos").glob("*.mp4"))[:2]
    gen = tmp_path / "gen"
    try:
        with background(head, env, tmp_path / "ray-head.log", ready="Ray runtime started"):
            with background(worker, env, tmp_path / "ray-worker.log", ready="Ray runtime started"):
                done = run(
                    [str(BIN / "imagineid"), "generate", str(trained_run), *map(str, audio), "--out", str(gen)]
                    + ["--steps", "2", "--batch-size", "1", "--first-frame-retries", "0", "--ray-address", address],
                    env,
                    timeout=600,
                )
            version = httpx.get(f"http://127.0.0.1:{dashboard}/api/version", timeout=10)  # the head's dashboard
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert "Connecting to existing Ray cluster at address: " in done.stderr
    assert version.status_code in (200, 401)  # the dashboard answers (401: it asks for the cluster's token)
    assert "generate: 2 videos written, 0 failed" in done.stdout and "videos per worker: worker-0 2" in done.stdout
    records = [json.loads(p.read_text()) for p in (gen / "records").glob("*.json")]
    assert len(records) == 2 and len({r["ray_node"] for r in records}) == 1  # both on the node with the GPU


@pytest.mark.slow
def test_a_ray_worker_killed_mid_flow_is_retried_and_a_lost_clip_is_listed(
    server, small_corpus: Path, tmp_path: Path, monkeypatch
) -> None:
    import ray
    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_URL,
        temporary_settings,
    )

    import imagineid.preprocessing.run as preprocessing_run
    from flows.preprocess import preprocess_flow

    url, env, _ = server
    settings = {PREFECT_API_URL: url, PREFECT_API_AUTH_STRING: env["PREFECT_API_AUTH_STRING"]}
    once, poison, good = [p.name for p in sorted((small_corpus / "videos").glob("*.mp4"))[:3]]
    copy_videos(small_corpus, tmp_path / "src", [once, poison, good])
    marker = str(tmp_path / "killed-once")
    extract_clip = preprocessing_run.extract_clip

    def dies_in_worker(job, root, config):
        """SIGKILL this Ray worker: always for `poison`, on the first attempt for `once`."""
        name = job.source.path.name
        if name == poison:
            os.kill(os.getpid(), signal.SIGKILL)
        if name == once:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
                os.kill(os.getpid(), signal.SIGKILL)
            except FileExistsError:
                pass
        return extract_clip(job, root, config)

    monkeypatch.setattr(preprocessing_run, "extract_clip", dies_in_worker)
    try:
        with temporary_settings(settings):
            summary = preprocess_flow(sources=[str(tmp_path / "src")], out=str(tmp_path / "d"), workers=2)
    finally:
        ray.shutdown()
    assert Path(marker).exists()  # the first attempt of `once` was killed...
    assert summary["processed"] == 2 and summary["lost"] == 1 and summary["rejected"] == 0  # ...and retried
    artifacts = api(
        url,
        "POST",
        "/artifacts/filter",
        {"artifacts": {"key": {"any_": ["preprocess-summary"]}}, "sort": "CREATED_DESC", "limit": 1},
    )
    assert poison in artifacts[0]["data"] and "WorkerCrashedError" in artifacts[0]["data"]
    assert once not in artifacts[0]["data"] and good not in artifacts[0]["data"]

    monkeypatch.setattr(preprocessing_run, "extract_clip", extract_clip)  # the next run picks the lost clip up
    with temporary_settings(settings):
        again = preprocess_flow(sources=[str(tmp_path / "src")], out=str(tmp_path / "d"), workers=1)
    assert again["skipped"] == 2 and again["processed"] == 1


@pytest.mark.slow
def test_a_task_retries_a_transient_error_and_not_a_bad_input(server) -> None:
    from prefect import flow, task
    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_URL,
        temporary_settings,
    )

    from tasks.policy import RETRY_TRANSIENT

    calls = []

    @task(**RETRY_TRANSIENT)
    def flaky(kind: str) -> str:
        calls.append(kind)
        if kind == "io" and calls.count(kind) == 1:
            raise OSError(errno.EIO, "input/output error")
        if kind == "bad":
            raise ValueError("bad input")
        return kind

    @flow
    def both() -> list[str]:
        fast = flaky.with_options(retry_delay_seconds=0)
        return [fast("io"), fast("bad", return_state=True).type.value]

    with temporary_settings(
        {PREFECT_API_URL: server[0], PREFECT_API_AUTH_STRING: server[1]["PREFECT_API_AUTH_STRING"]}
    ):
        assert both() == ["io", "FAILED"]
    assert calls == ["io", "io", "bad"]
