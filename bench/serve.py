"""``python -m bench serve``: MLflow's scoring server beside in-process ``predict`` and the bare forward.

One run logs the project's network (as ``train.py`` would, into a temporary store; its weights
do not change the timings) and times, on the same batches of real test images:

  forward   the network alone in torch: uint8 pixels to the data module's normalisation, the
            forward pass, ``argmax`` (no MLflow);
  predict   ``mlflow.pyfunc.load_model(...).predict`` in this process, on an N x 784 uint8 array
            and on the ``image`` column (each image's bytes) the compact request carries;
  served    ``python serve.py`` (``mlflow models serve``) on a loopback port, ``--workers`` worker
            processes, hit by 1, 4 and 8 concurrent clients (threads of this process, one
            keep-alive connection each) with requests of 1 and 100 images, in both request forms:
            ``pixels`` (``{"inputs": [[784 numbers], ...]}``) and ``image`` (``{"inputs":
            {"image": [base64 of 784 bytes, ...]}}``). Bodies are encoded once, before the clock.

Latency is per request as the client sees it (p50, p95); images/s is images answered over the
cell's wall time. Every loop is bounded (``--requests`` per client, ``--seconds`` per cell). The
ratios and their targets are printed at the end and written, with every figure, to a JSON file.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch

from bench.common import compose
from mnist_mlp.paths import repo_root

TARGET = 3.0  # served / predict (100 images, 1 client) and predict / forward, each at most this


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    p.add_argument("--clients", type=ints, default=[1, 4, 8], help="concurrent clients (1,4,8)")
    p.add_argument("--sizes", type=ints, default=[1, 100], help="images per request (1,100)")
    p.add_argument("--forms", type=lambda s: s.split(","), default=["image", "pixels"],
                   help="request forms (image,pixels)")
    p.add_argument("--workers", type=int, default=1, help="server worker processes (serve.py workers)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads: per server worker, and of this process's paths")
    p.add_argument("--requests", type=int, default=40, help="requests per client per cell")
    p.add_argument("--seconds", type=float, default=20.0, help="wall-clock cap per cell")
    p.add_argument("--calls", type=int, default=200, help="timed in-process calls per batch size")
    p.add_argument("--out", default=str(repo_root() / "bench_results"), help="folder for the JSON")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml (data, model)")
    return p.parse_args(argv)


@dataclass
class Logged:
    """The logged model, its store, the network and its normalisation, the test images."""

    model_uri: str
    tracking_uri: str
    net: Any
    mean: float
    std: float
    images: np.ndarray


def logged_model(overrides: list[str], tmp: Path) -> Logged:
    """The network logged as ``train.py`` logs it, into a store under ``tmp``."""
    from mnist_mlp import config
    from mnist_mlp.tracking.model import log_model, model_payload, raw_pixels
    from mnist_mlp.tracking.store import open_store

    cfg = compose(overrides, tmp)
    datamodule = config.build(cfg.data, "data", _convert_="all")
    module = config.build(cfg.model, "model", _convert_="all").eval()
    datamodule.prepare_data()
    datamodule.setup("test")
    uri = cfg.logger.tracking_uri
    client, experiment_id = open_store(uri, "bench-serve", cfg.logger.artifact_location)
    run_id = client.create_run(experiment_id).info.run_id
    info = log_model(run_id, uri, model_payload(module, datamodule))
    client.set_terminated(run_id, "FINISHED")
    return Logged(info.model_uri, uri, module.net.eval(), float(datamodule.mean),
                  float(datamodule.std), raw_pixels(datamodule).numpy())


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "n": len(ms)}


def time_calls(fn: Callable[[], Any], calls: int) -> dict[str, float]:
    fn()  # warm-up
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return percentiles(seconds)


def in_process(logged: Logged, model: Any, batches: dict[int, np.ndarray],
               calls: int) -> dict[str, dict[int, dict[str, float]]]:
    """forward, predict on pixels, predict on the image column; per batch size."""
    net, mean, std = logged.net, logged.mean, logged.std

    def forward(pixels: np.ndarray) -> Any:
        with torch.inference_mode():
            x = torch.from_numpy(pixels).to(torch.float32)
            return net((x / 255.0 - mean) / std).argmax(dim=-1)

    out: dict[str, dict[int, dict[str, float]]] = {"forward": {}, "predict": {}, "predict_image": {}}
    for n, pixels in batches.items():
        column = {"image": [r.tobytes() for r in pixels]}
        out["forward"][n] = time_calls(lambda p=pixels: forward(p), calls)
        out["predict"][n] = time_calls(lambda p=pixels: model.predict(p), calls)
        out["predict_image"][n] = time_calls(lambda c=column: model.predict(c), calls)
    return out


def _client(url: str, body: bytes, requests: int, deadline: float, out: list[float],
            errors: list[str]) -> None:
    parsed = urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=120)
    headers = {"Content-Type": "application/json"}
    try:
        for _ in range(requests):
            if time.monotonic() > deadline:
                return
            start = time.perf_counter()
            conn.request("POST", "/invocations", body, headers)
            response = conn.getresponse()
            data = response.read()
            if response.status != 200:
                errors.append(f"HTTP {response.status}: {data[:200]!r}")
                return
            out.append(time.perf_counter() - start)
    finally:
        conn.close()


def load_cell(url: str, body: bytes, n_images: int, clients: int, requests: int,
              seconds: float) -> dict[str, float]:
    """``clients`` threads, each sending ``body`` up to ``requests`` times (``seconds`` cap)."""
    for _ in range(2):  # warm-up: a fresh worker's first requests are slower
        _client(url, body, 1, time.monotonic() + seconds, [], [])
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=_client, args=(url, body, requests, deadline, lat, errors))
               for lat in latencies]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise SystemExit(f"the scoring server refused a benchmark request: {errors[0]}")
    flat = [s for lat in latencies for s in lat]
    return {**percentiles(flat), "images_per_s": len(flat) * n_images / wall, "wall_s": wall}


def check_answers(url: str, bodies: dict[str, bytes], expected: np.ndarray) -> None:
    """The server's classes are in-process predict's, before anything is timed."""
    import requests

    for form, body in bodies.items():
        got = requests.post(f"{url}/invocations", data=body, timeout=120,
                            headers={"Content-Type": "application/json"}).json()["predictions"]
        if not np.array_equal(np.asarray(got), expected):
            raise SystemExit(f"the served classes ({form}) differ from in-process predict's")


def served(args: argparse.Namespace, logged: Logged, batches: dict[int, np.ndarray],
           expected: np.ndarray, tmp: Path) -> dict[str, Any]:
    from mnist_mlp.tracking.serving import image_body, pixels_body, scoring_server

    encode = {"image": image_body, "pixels": pixels_body}
    bodies = {f: {n: json.dumps(encode[f](b)).encode() for n, b in batches.items()}
              for f in args.forms}
    cells: dict[str, Any] = {}
    start = time.perf_counter()
    with scoring_server(logged.model_uri, logged.tracking_uri, workers=args.workers,
                        overrides=[f"threads={args.threads}"], log=tmp / "serve.log") as server:
        startup = time.perf_counter() - start
        big = max(batches)
        check_answers(server.url, {f: bodies[f][big] for f in args.forms}, expected)
        for form in args.forms:
            for n in args.sizes:
                for clients in args.clients:
                    cell = load_cell(server.url, bodies[form][n], n, clients, args.requests,
                                     args.seconds)
                    cells[f"{form}/{n}/{clients}"] = {**cell, "body_kb": len(bodies[form][n]) / 1e3}
                    print(f"  {form:6} {n:4} images/request {clients} client(s): "
                          f"{cell['images_per_s']:8.0f} images/s, p50 {cell['p50_ms']:7.1f} ms, "
                          f"p95 {cell['p95_ms']:7.1f} ms ({cell['n']} requests)", flush=True)
    return {"startup_s": startup, "cells": cells}


def ratios(local: dict[str, Any], remote: dict[str, Any], forms: list[str],
           big: int) -> list[dict[str, Any]]:
    """The two targets (and the pixels form's figure beside the first)."""
    rows = []
    for form in forms:
        inproc = local["predict_image" if form == "image" else "predict"][big]["p50_ms"]
        cell = remote["cells"].get(f"{form}/{big}/1")
        if cell:
            rows.append({"what": f"served ({form} form, {big} images, 1 client) / in-process predict",
                         "ratio": cell["p50_ms"] / inproc, "target": TARGET})
    rows.append({"what": f"in-process predict ({big} images) / bare forward",
                 "ratio": local["predict"][big]["p50_ms"] / local["forward"][big]["p50_ms"],
                 "target": TARGET})
    return rows


def print_in_process(local: dict[str, Any]) -> None:
    names = {"forward": "bare forward (torch)", "predict": "predict, N x 784 uint8",
             "predict_image": "predict, image column"}
    for path, label in names.items():
        for n, row in local[path].items():
            print(f"  {label:24} {n:4} images: p50 {row['p50_ms']:7.3f} ms, p95 "
                  f"{row['p95_ms']:7.3f} ms, {n / row['p50_ms'] * 1e3:9.0f} images/s")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f}; {args.threads} torch thread(s), {args.workers} server "
          f"worker(s)", flush=True)
    report: dict[str, Any] = {"load_before": load, "argv": ["serve", *(argv or [])],
                              "threads": args.threads, "workers": args.workers}
    with tempfile.TemporaryDirectory(prefix="mnist-bench-serve-") as tmp_name:
        tmp = Path(tmp_name)
        import mlflow

        logged = logged_model(args.overrides, tmp)
        model = mlflow.pyfunc.load_model(logged.model_uri)
        batches = {n: logged.images[np.arange(n) % len(logged.images)] for n in args.sizes}
        print("in-process, this process:", flush=True)
        local = in_process(logged, model, batches, args.calls)
        print_in_process(local)
        expected = np.asarray(model.predict(batches[max(batches)]))
        print(f"served (python serve.py, {args.workers} worker(s), loopback):", flush=True)
        remote = served(args, logged, batches, expected, tmp)
        print(f"  (server ready {remote['startup_s']:.1f} s after start)")
    big = max(args.sizes)
    rows = ratios(local, remote, args.forms, big)
    print("ratios (p50 over p50):")
    for row in rows:
        verdict = "met" if row["ratio"] <= row["target"] else "MISSED"
        print(f"  {row['what']}: {row['ratio']:.2f}x (target <= {row['target']:.0f}x: {verdict})")
    report.update({"in_process": local, "served": remote, "ratios": rows,
                   "load_after": os.getloadavg()})
    print(f"load average after: {report['load_after'][0]:.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-serve-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"figures: {path}")
    return 0

