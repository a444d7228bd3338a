"""``python -m bench serve``: MLflow's scoring server beside in-process ``predict`` and the bare forward.

One run logs the project's network (as ``train.py`` would, into a temporary store; its weights
do not change the timings), starts ``python serve.py`` (``mlflow models serve``, ``--workers``
processes) on a loopback port, and times on the same batches of real test images (1 and 100):

  forward        the network alone in torch: uint8 pixels to the data module's normalisation,
                 the forward pass, ``argmax`` (no MLflow);
  predict        ``mlflow.pyfunc.load_model(...).predict`` in this process on an N x 784 uint8
                 array; ``predict, image`` on the ``image`` column of raw bytes;
  served image   one client, one keep-alive connection (``--per-request``: a new one per
                 request), ``{"inputs": {"image": [base64 of each image's 784 bytes]}}``;
                 ``served pixels``: ``{"inputs": [[784 numbers], ...]}``.

These paths alternate in ``--rounds`` rounds of ``--calls`` calls each, so a load change on a
shared machine hits all alike; their p50s give the ratios, printed with their targets. Then the
load table: 1, 4 and 8 concurrent clients (threads of this process, a connection each) per form
and size, images/s over the cell's wall time and the clients' p50/p95 latency. Bodies are encoded
once, before any clock. Every loop is bounded (``--requests`` per client, ``--seconds`` per cell).
Every figure goes to a JSON file.
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

from bench.common import compose, write_figures
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
    p.add_argument("--rounds", type=int, default=10, help="alternating rounds of the paired paths")
    p.add_argument("--calls", type=int, default=20, help="calls per path per round")
    p.add_argument("--requests", type=int, default=40, help="requests per client per load cell")
    p.add_argument("--seconds", type=float, default=20.0, help="wall-clock cap per load cell")
    p.add_argument("--per-request", action="store_true",
                   help="a new connection per request instead of keep-alive (for --workers > 1)")
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


class Connection:
    """An HTTP client of the scoring server posting JSON bodies: one keep-alive connection, or
    (``per_request``) a new connection per request, which uvicorn's multi-worker mode needs (it
    leaves Nagle's algorithm on for kept-alive connections, uvicorn issue 3149)."""

    def __init__(self, url: str, per_request: bool = False) -> None:
        parsed = urlparse(url)
        self.address, self.per_request = (parsed.hostname, parsed.port), per_request
        self.conn = http.client.HTTPConnection(*self.address, timeout=120)

    def post(self, body: bytes) -> bytes:
        if self.per_request:
            self.conn.close()
            self.conn = http.client.HTTPConnection(*self.address, timeout=120)
        self.conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise SystemExit(f"the scoring server refused a benchmark request: HTTP "
                             f"{response.status} {data[:300]!r}")
        return data

    def close(self) -> None:
        self.conn.close()


def path_calls(logged: Logged, model: Any, pixels: np.ndarray, bodies: dict[str, bytes],
               conn: Connection) -> dict[str, Callable[[], Any]]:
    """The paired paths for one batch, each a no-argument call."""
    net, mean, std = logged.net, logged.mean, logged.std
    column = {"image": [r.tobytes() for r in pixels]}

    def forward() -> Any:
        with torch.inference_mode():
            x = torch.from_numpy(pixels).to(torch.float32)
            return net((x / 255.0 - mean) / std).argmax(dim=-1)

    calls = {"forward": forward, "predict": lambda: model.predict(pixels),
             "predict, image": lambda: model.predict(column)}
    for form, body in bodies.items():
        calls[f"served {form}"] = lambda b=body: conn.post(b)
    return calls


def paired(calls: dict[str, Callable[[], Any]], rounds: int, n: int) -> dict[str, dict[str, float]]:
    """Every path ``n`` times per round, the paths in turn, ``rounds`` times (one warm-up call)."""
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for fn in calls.values():
        fn()
    for _ in range(rounds):
        for name, fn in calls.items():
            for _ in range(n):
                start = time.perf_counter()
                fn()
                seconds[name].append(time.perf_counter() - start)
    return {name: percentiles(s) for name, s in seconds.items()}


def _client(url: str, body: bytes, requests: int, deadline: float, out: list[float],
            per_request: bool) -> None:
    conn = Connection(url, per_request)
    try:
        for _ in range(requests):
            if time.monotonic() > deadline:
                return
            start = time.perf_counter()
            conn.post(body)
            out.append(time.perf_counter() - start)
    finally:
        conn.close()


def load_cell(url: str, body: bytes, n_images: int, clients: int, args: argparse.Namespace
              ) -> dict[str, float]:
    """``clients`` threads, each sending ``body`` up to ``args.requests`` times (``args.seconds``
    cap)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    deadline = time.monotonic() + args.seconds
    threads = [threading.Thread(target=_client, args=(url, body, args.requests, deadline, lat,
                                                      args.per_request))
               for lat in latencies]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    flat = [s for lat in latencies for s in lat]
    if len(flat) < clients:
        raise SystemExit(f"a benchmark client got no answer ({len(flat)} of {clients} clients "
                         f"answered): see the server's log")
    return {**percentiles(flat), "images_per_s": len(flat) * n_images / wall, "wall_s": wall}


def check_answers(conn: Connection, bodies: dict[str, bytes], expected: np.ndarray) -> None:
    """The server's classes are in-process predict's, before anything is timed."""
    for form, body in bodies.items():
        got = json.loads(conn.post(body))["predictions"]
        if not np.array_equal(np.asarray(got), expected):
            raise SystemExit(f"the served classes ({form} form) differ from in-process predict's")


def run(args: argparse.Namespace, logged: Logged, tmp: Path) -> dict[str, Any]:
    """The paired paths per batch size, then the load table, against one server."""
    import mlflow

    from mnist_mlp.tracking.serving import image_body, pixels_body, scoring_server

    model = mlflow.pyfunc.load_model(logged.model_uri)
    batches = {n: logged.images[np.arange(n) % len(logged.images)] for n in args.sizes}
    encode = {"image": image_body, "pixels": pixels_body}
    bodies = {n: {f: json.dumps(encode[f](b)).encode() for f in args.forms}
              for n, b in batches.items()}
    start = time.perf_counter()
    with scoring_server(logged.model_uri, logged.tracking_uri, workers=args.workers,
                        overrides=[f"threads={args.threads}"], log=tmp / "serve.log") as server:
        startup = time.perf_counter() - start
        print(f"server ready {startup:.1f} s after start; paired paths, {args.rounds} rounds x "
              f"{args.calls} calls:", flush=True)
        conn = Connection(server.url, args.per_request)
        pairs: dict[int, dict[str, dict[str, float]]] = {}
        for n, pixels in batches.items():
            check_answers(conn, bodies[n], np.asarray(model.predict(pixels)))
            pairs[n] = paired(path_calls(logged, model, pixels, bodies[n], conn), args.rounds,
                              args.calls)
            for name, row in pairs[n].items():
                print(f"  {name:15} {n:4} images: p50 {row['p50_ms']:8.3f} ms, p95 "
                      f"{row['p95_ms']:8.3f} ms, {n / row['p50_ms'] * 1e3:9.0f} images/s",
                      flush=True)
        conn.close()
        how = "a new connection per request" if args.per_request else "a keep-alive connection each"
        print(f"load: concurrent clients, {how}:", flush=True)
        cells: dict[str, Any] = {}
        for form in args.forms:
            for n in args.sizes:
                for clients in args.clients:
                    cell = load_cell(server.url, bodies[n][form], n, clients, args)
                    cells[f"{form}/{n}/{clients}"] = {**cell, "body_kb": len(bodies[n][form]) / 1e3}
                    print(f"  {form:6} {n:4} images/request, {clients} client(s): "
                          f"{cell['images_per_s']:8.0f} images/s, p50 {cell['p50_ms']:7.1f} ms, "
                          f"p95 {cell['p95_ms']:7.1f} ms ({cell['n']} requests)", flush=True)
    return {"startup_s": startup, "paired": pairs, "cells": cells}


def ratios(pairs: dict[int, dict[str, dict[str, float]]], forms: list[str]) -> list[dict[str, Any]]:
    """The targets at the largest batch: served / predict per form, predict / forward."""
    big = max(pairs)
    p50 = {name: row["p50_ms"] for name, row in pairs[big].items()}
    rows = [{"what": f"served {form} ({big} images, 1 client) / in-process predict",
             "ratio": p50[f"served {form}"] / p50["predict"], "target": TARGET} for form in forms]
    rows.append({"what": f"in-process predict ({big} images) / bare forward",
                 "ratio": p50["predict"] / p50["forward"], "target": TARGET})
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f}; {args.threads} torch thread(s) here and per server "
          f"worker, {args.workers} worker(s)", flush=True)
    report: dict[str, Any] = {"load_before": load, "argv": ["serve", *(argv or [])],
                              "threads": args.threads, "workers": args.workers,
                              "per_request": args.per_request}
    with tempfile.TemporaryDirectory(prefix="mnist-bench-serve-") as tmp_name:
        tmp = Path(tmp_name)
        report.update(run(args, logged_model(args.overrides, tmp), tmp))
    rows = ratios(report["paired"], args.forms)
    print("ratios (p50 over p50, paired rounds):")
    for row in rows:
        verdict = "met" if row["ratio"] <= row["target"] else "MISSED"
        print(f"  {row['what']}: {row['ratio']:.2f}x (target <= {row['target']:.0f}x: {verdict})")
    report["ratios"] = rows
    write_figures(report, args.out, "bench-serve")
    return 0
