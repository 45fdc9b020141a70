"""The local endpoint under load (issue 17 item 5): 1, 8 and 32 concurrent clients for each recipe.

For the newest Approved package of each recipe's group (robocar-classifiers, robocar-pilots) in
``--workspace`` (read only: its registry and the packages' model objects are copied to a temporary
workspace), in the same run:

* **the model alone** (before and after the endpoint's runs, averaged: the machine's load drifts): the
  recipe's handler (``inference/server.py``'s ``HANDLERS``: decode,
  prepare, forward, encode the answer) called in its own environment with no HTTP, one call at a time
  (p50/p99 ms), then from as many threads as the machine has cores for the same number of calls
  (requests/s): what the CPU cores can infer;
* **the endpoint**: ``deploy`` it, then for each concurrency N, N clients on keep-alive connections send
  the same payload (a photo or a camera frame made here) and we count requests/s, p50/p99 latency and
  failures. At concurrency 1 the client is a Python thread sending ``--requests`` requests: each answer
  carries the handler's own time (``X-Robocar-Model-Ms``), so the server's addition is the median latency
  minus the median model time of the same requests. At 8 and 32 the clients are ``wrk`` (C, Debian's
  package; ``make system`` installs it) for ``--seconds``: 32 Python client threads took 3-5% of the two
  cores and, worse, their own GIL's turns, so the figure measured the clients as much as the server; a
  real endpoint's clients are on other machines. ``--load-generator python`` uses the threads anyway.

Goals: at concurrency 1 the server adds <= 1 ms to the model's p50; at 32, throughput >= 90% of the
model alone on the cores, and no failed request. The load average before and after is printed: the
machine may be shared.

Usage: ``python benchmarks/serving.py --workspace .robocar [--requests 400] [--seconds 10]
[--recipes classifier,pilot] [--load-generator wrk|python]``.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.s3_uri import split_s3_uri  # noqa: E402
from inference.server import MODEL_TIME_HEADER  # noqa: E402
from pipelines.local import endpoint_server as es  # noqa: E402
from pipelines.local import environments  # noqa: E402
from pipelines.local.registry import LocalSageMakerClient  # noqa: E402

GROUPS = {"classifier": "robocar-classifiers", "pilot": "robocar-pilots"}
CONCURRENCY = (1, 8, 32)
GOAL_ADDED_MS = 1.0
GOAL_THROUGHPUT_SHARE = 0.9
# The handler alone, in the recipe's environment: the server module's HANDLERS (inference/server.py).
MODEL_ALONE = """
import json, sys, threading, time
from inference import server
recipe, model_dir, payload_file, content_type = sys.argv[2:6]
calls, threads = int(sys.argv[6]), int(sys.argv[7])
handle = server.HANDLERS[recipe](__import__("pathlib").Path(model_dir))
payload = open(payload_file, "rb").read()
for _ in range(10):
    handle(payload, content_type, "application/json")
times = []
for _ in range(calls):
    started = time.perf_counter()
    handle(payload, content_type, "application/json")
    times.append((time.perf_counter() - started) * 1000)
def work(n):
    for _ in range(n):
        handle(payload, content_type, "application/json")
workers = [threading.Thread(target=work, args=(calls // threads,)) for _ in range(threads)]
started = time.perf_counter()
for w in workers: w.start()
for w in workers: w.join()
wall = time.perf_counter() - started
print(json.dumps({"times_ms": times, "parallel_rps": threads * (calls // threads) / wall}))
"""


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def copy_workspace(source: Path, target: Path, arns: list[str]) -> None:
    """The registry and the packages' model objects only (a workspace holds much else)."""
    shutil.copytree(source / "registry", target / "registry")
    sagemaker = LocalSageMakerClient(target)
    for arn in arns:
        url = sagemaker.describe_model_package(ModelPackageName=arn)["InferenceSpecification"]["Containers"][
            0
        ]["ModelDataUrl"]
        bucket, key = split_s3_uri(url)
        (target / "s3" / bucket / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / "s3" / bucket / key, target / "s3" / bucket / key)


def newest_approved(workspace: Path, group: str) -> str | None:
    try:
        packages = LocalSageMakerClient(workspace).list_model_packages(
            ModelPackageGroupName=group,
            ModelApprovalStatus="Approved",
            SortBy="CreationTime",
            SortOrder="Descending",
        )["ModelPackageSummaryList"]
    except Exception:  # no such group in this workspace
        return None
    return packages[0]["ModelPackageArn"] if packages else None


def payload(recipe: str) -> tuple[bytes, str]:
    """A camera frame (160x120) for the pilot, a 96x96 photo for the classifier, as JPEG: smooth blocks of
    colour, as a camera sees, not noise (which JPEG encodes to several times the size)."""
    width, height = (160, 120) if recipe == "pilot" else (96, 96)
    blocks = np.random.default_rng(7).integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(blocks.repeat(8, 0).repeat(8, 1)).save(out, "JPEG", quality=90)
    return out.getvalue(), "image/jpeg"


def model_alone(state: dict[str, Any], python: str, body_file: Path, content_type: str, calls: int) -> dict:
    result = subprocess.run(
        [
            python,
            "-c",
            MODEL_ALONE,
            "inference/server.py",
            state["recipe"],
            str(Path(state["folder"]) / "model"),
            str(body_file),
            content_type,
            str(calls),
            str(os.cpu_count() or 1),
        ],  # fmt: skip
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"the model alone failed:\n{result.stderr[-2000:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    times = measured["times_ms"]
    return {
        "p50_ms": percentile(times, 50),
        "p99_ms": percentile(times, 99),
        "serial_rps": 1000 / statistics.mean(times),
        "parallel_rps": measured["parallel_rps"],
    }


def load(url: str, body: bytes, content_type: str, clients: int, requests: int) -> dict[str, Any]:
    """``requests`` POSTs from ``clients`` threads, each on its own keep-alive connection."""
    port = int(url.rsplit(":", 1)[1])
    latencies: list[float] = []
    model_ms: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    share = [requests // clients + (1 if i < requests % clients else 0) for i in range(clients)]
    start_together = threading.Barrier(clients + 1)

    def client(n: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine, model, failed = [], [], []
        start_together.wait()
        for _ in range(n):
            started = time.perf_counter()
            try:
                connection.request("POST", "/invocations", body, {"Content-Type": content_type})
                answer = connection.getresponse()
                answer.read()
                elapsed = (time.perf_counter() - started) * 1000
                if answer.status != 200:
                    failed.append(f"HTTP {answer.status}")
                    continue
                mine.append(elapsed)
                model.append(float(answer.getheader(MODEL_TIME_HEADER, "nan")))
            except (OSError, http.client.HTTPException) as exc:
                failed.append(repr(exc))
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        connection.close()
        with lock:
            latencies.extend(mine)
            model_ms.extend(model)
            failures.extend(failed)

    threads = [threading.Thread(target=client, args=(n,)) for n in share]
    for thread in threads:
        thread.start()
    start_together.wait()
    started, cpu = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.join()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "clients": clients,
        "requests": requests,
        "rps": len(latencies) / wall,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "model_p50_ms": percentile(model_ms, 50),
        "added_p50_ms": percentile(latencies, 50) - percentile(model_ms, 50),
        "client_cpu_share": cpu / (wall * (os.cpu_count() or 1)),  # of all cores: what the clients took
        "failed": len(failures),
        "failures": sorted(set(failures))[:5],
    }


# wrk's request: the payload read once from a file (Lua strings hold bytes), POSTed on every connection.
WRK_SCRIPT = """
local file = io.open(os.getenv("ROBOCAR_BENCH_BODY"), "rb")
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = os.getenv("ROBOCAR_BENCH_TYPE")
"""
WRK_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def wrk_ms(text: str) -> float:
    """wrk's '912.00us' / '3.46ms' / '1.20s' -> milliseconds."""
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip()).groups()  # type: ignore[union-attr]
    return float(number) * WRK_UNITS_MS[unit]


def load_wrk(url: str, body_file: Path, content_type: str, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` keep-alive connections from wrk on 2 threads for ``seconds``; its --latency summary."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: `make system` installs it (or pass --load-generator python)")
    script = body_file.with_suffix(".lua")
    script.write_text(WRK_SCRIPT)
    env = {**os.environ, "ROBOCAR_BENCH_BODY": str(body_file), "ROBOCAR_BENCH_TYPE": content_type}
    threads = min(clients, 2)  # wrk's threads only move bytes; two keep 32 connections busy
    command = ["wrk", "-t", str(threads), "-c", str(clients), "-d", f"{seconds:g}s", "--latency"]
    out = subprocess.run(
        [*command, "--timeout", "60s", "-s", str(script), f"{url}/invocations"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    latency = dict(re.findall(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+[a-z]+)", out, re.MULTILINE))
    if set(latency) != {"50", "99"}:
        raise SystemExit(f"cannot read wrk's latency distribution from:\n{out}")
    done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = int(non_2xx.group(1)) if non_2xx else 0
    failed += sum(int(n) for n in socket_errors.groups()) if socket_errors else 0
    return {
        "clients": clients,
        "requests": done,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": wrk_ms(latency["50"]),
        "p99_ms": wrk_ms(latency["99"]),
        "model_p50_ms": float("nan"),  # wrk does not read the model-time header
        "added_p50_ms": float("nan"),
        "client_cpu_share": float("nan"),
        "failed": failed,
        "failures": [line.strip() for line in out.splitlines() if re.search("Non-2xx|Socket errors", line)],
        "load_generator": "wrk",
    }


def bench_recipe(
    workspace: Path, recipe: str, arn: str, requests: int, seconds: float, generator: str
) -> dict[str, Any]:
    state = es.deploy(workspace, f"bench-{recipe}", arn)
    try:
        body, content_type = payload(recipe)
        body_file = workspace / f"{recipe}-payload.jpg"
        body_file.write_bytes(body)
        python = es.python_for(recipe, workspace)
        before = model_alone(state, python, body_file, content_type, requests)
        runs = [
            load(state["url"], body, content_type, clients, requests)
            if clients == 1 or generator == "python"
            else load_wrk(state["url"], body_file, content_type, clients, seconds)
            for clients in CONCURRENCY
        ]
        after = model_alone(state, python, body_file, content_type, requests)
    finally:
        es.delete(workspace, f"bench-{recipe}")
    alone: dict[str, Any] = {key: (before[key] + after[key]) / 2 for key in before}  # the load drifts
    alone["rounds"] = [before, after]
    at_one, at_most = runs[0], runs[-1]
    capacity = max(alone["serial_rps"], alone["parallel_rps"])  # the best the cores did without HTTP
    return {
        "recipe": recipe,
        "package": arn,
        "payload_bytes": len(body),
        "model_alone": alone,
        "endpoint": runs,
        "goals": {
            "added_ms_at_1": at_one["added_p50_ms"],
            "added_ms_at_1_vs_model_alone": at_one["p50_ms"] - alone["p50_ms"],
            "added_ok": at_one["added_p50_ms"] <= GOAL_ADDED_MS,
            "throughput_share_at_32": at_most["rps"] / capacity,
            "throughput_ok": at_most["rps"] >= GOAL_THROUGHPUT_SHARE * capacity,
            "no_failures": sum(run["failed"] for run in runs) == 0,
        },
    }


def print_result(result: dict[str, Any]) -> None:
    alone, goals = result["model_alone"], result["goals"]
    print(
        f"\n{result['recipe']} ({result['package']}, {result['payload_bytes']} B JPEG)\n"
        f"  model alone: p50 {alone['p50_ms']:.2f} ms, p99 {alone['p99_ms']:.2f} ms, "
        f"{alone['serial_rps']:.1f} req/s serial, "
        f"{alone['parallel_rps']:.1f} req/s on {os.cpu_count()} threads"
    )
    print("  clients   req/s   p50 ms   p99 ms   model p50 ms   added p50 ms   client CPU   failed")
    for run in result["endpoint"]:
        by_wrk = run.get("load_generator") == "wrk"  # wrk reads no model-time header, nor its own CPU
        model, added, cpu = (
            ("(wrk)", "", "")
            if by_wrk
            else (
                f"{run['model_p50_ms']:.2f}",
                f"{run['added_p50_ms']:.2f}",
                f"{run['client_cpu_share']:.0%}",
            )
        )
        print(
            f"  {run['clients']:>7} {run['rps']:>7.1f} {run['p50_ms']:>8.2f} {run['p99_ms']:>8.2f} "
            f"{model:>14} {added:>14} {cpu:>12} {run['failed']:>8}"
        )
    print(
        f"  goals: added at 1 = {goals['added_ms_at_1']:.2f} ms (<= {GOAL_ADDED_MS}: "
        f"{'met' if goals['added_ok'] else 'NOT met'}); vs the model alone's p50 "
        f"{goals['added_ms_at_1_vs_model_alone']:+.2f} ms; throughput at 32 = "
        f"{goals['throughput_share_at_32']:.0%} of the model alone's best (>= 90%: "
        f"{'met' if goals['throughput_ok'] else 'NOT met'}); failures: "
        f"{'none' if goals['no_failures'] else 'SOME'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path(".robocar"))
    parser.add_argument(
        "--requests", type=int, default=400, help="requests per concurrency (and model calls)"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="wrk: seconds per concurrency above 1")
    parser.add_argument("--load-generator", choices=("wrk", "python"), default="wrk")
    parser.add_argument("--recipes", default="classifier,pilot")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    recipes = [r for r in args.recipes.split(",") if r]
    arns = {recipe: newest_approved(args.workspace, GROUPS[recipe]) for recipe in recipes}
    missing = [recipe for recipe, arn in arns.items() if arn is None]
    if missing:
        print(f"no Approved package for {', '.join(missing)} in {args.workspace}", file=sys.stderr)
        return 2
    # The MXNet environment the source workspace's local mode built (reused, not rebuilt per temporary copy).
    os.environ.setdefault(environments.CACHE_VARIABLE, str(environments.cache_root(args.workspace)))
    print(f"cores: {os.cpu_count()}; load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        workspace = Path(tmp) / "workspace"
        copy_workspace(args.workspace, workspace, list(arns.values()))
        results = [
            bench_recipe(workspace, recipe, arns[recipe], args.requests, args.seconds, args.load_generator)
            for recipe in recipes
        ]
    for result in results:
        print_result(result)
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps({"cores": os.cpu_count(), "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
