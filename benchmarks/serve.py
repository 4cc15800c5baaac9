"""`rlad serve` under load on loopback (issue 17): requests/s, p50 and p99 latency and errors by status,
with a share of malformed uploads, against the same work called in-process.

    .venv/bin/python benchmarks/serve.py --train-images 100       # 8 clients, 60 s, 10% malformed, clients at nice +10 and +0
    .venv/bin/python benchmarks/serve.py --quick --no-append      # smoke run (tiny model, 5 s); not a result
    .venv/bin/python benchmarks/serve.py --from-results benchmarks/results/serve-DATE.jsonl

The model is PatchCore fitted on the first `--train-images` training images of magnetic tile (ImageNet
weights from $RLAD_BACKBONE_WEIGHTS, default ../shared/weights) and exported with `rlad export` (or
`--run`, any run folder or .onnx file). `rlad serve` runs as its own process; one row per
`--client-nice` value. Each row: the in-process figure (the server's own per-request work,
`PixelInspector.handle`: decode, model, decision, mask PNG, called back to back on the same test
images for `--baseline-seconds`), then `--clients` client threads post for `--seconds`, then the
in-process figure again (how much the host drifted meanwhile). The clients run in a process of their
own, niceness raised by the row's value (a real deployment's clients are not on the server's cores;
+0 shows what sharing them costs), with one kept-alive `http.client` connection per thread and every
request body multipart-encoded once before the run; each request is, with probability `--malformed`,
one of six bad uploads of tests/serve/test_api.py (not an image, truncated, zero bytes, wrong field,
wrong content type, too many pixels). CPU seconds of the server and client processes are read from
/proc over the load window. Goals: zero 5xx, p99 under 4x p50 (good requests), good-request
throughput at least 80% of the in-process figure taken right before. The 1-minute load average is
recorded.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from benchmarks._common import (ROOT, SHARED_DATA, SHARED_WEIGHTS, Results, failed_row,  # noqa: E402
                               failures_text, finish, ok_rows, work_dir)
from benchmarks.export import subset_folder  # noqa: E402

TITLE = "Inspection server under load"


def prepare_model(work: Path, data: Path, train_images: int, quick: bool) -> Path:
    from rlad.workflows import detection
    from rlad.workflows.export import export

    folder = subset_folder(data, work / "data", train_images)
    settings = ["image_size=64", "model.backbone.stages=[1,2]"] if quick else []
    run = detection.fit("patchcore", folder, work / "patchcore", detection.build_config("patchcore", None, settings))
    target = work / "patchcore.onnx"
    if not target.exists():
        export(run.path, target)
    return target


def good_payloads(data: Path, count: int) -> list[tuple[str, bytes, str]]:
    from rlad.data.folder import discover

    test = discover(data).test
    picked = [test[i] for i in np.linspace(0, len(test) - 1, count).round().astype(int)]
    types = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".bmp": "image/bmp"}
    return [(s.path.name, s.path.read_bytes(), types.get(s.path.suffix.lower(), "image/png")) for s in picked]


def multipart(field: str, filename: str, data: bytes, content_type: str) -> tuple[bytes, str]:
    """One file upload as a multipart/form-data body, encoded once, and its Content-Type header."""
    boundary = "rlad-bench-" + uuid.uuid4().hex
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def bad_requests(good: tuple[str, bytes, str]) -> list[tuple[str, bytes, str]]:
    """The six malformed uploads of tests/serve/test_api.py, made from one good image: (kind, body, type)."""
    from PIL import Image

    name, data, kind = good
    huge = io.BytesIO()
    Image.new("L", (9000, 6000)).save(huge, format="PNG")  # 54 Mpx, a few kB: over the default pixel limit
    return [
        ("not an image", *multipart("image", "a.png", b"hello, world " * 40, "image/png")),
        ("truncated", *multipart("image", name, data[: len(data) // 2], kind)),
        ("zero bytes", *multipart("image", name, b"", kind)),
        ("wrong field", *multipart("picture", name, data, kind)),
        ("wrong content type", *multipart("image", name, data, "text/plain")),
        ("too many pixels", *multipart("image", "huge.png", huge.getvalue(), "image/png")),
    ]


def open_in_process(model: Path, threads: int):
    import torch

    from rlad.serve.inspect import PixelInspector

    torch.set_num_threads(threads)
    return PixelInspector(model, threads)


def in_process_rps(inspector, payloads, seconds: float) -> dict:
    """The server's per-request work called back to back in this process: requests/s and CPU ms each."""
    from rlad.serve.config import ServeConfig

    cfg = ServeConfig()
    inspector.handle({"image": (payloads[0][1], payloads[0][2])}, cfg)  # warm-up
    done, started, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        name, data, kind = payloads[done % len(payloads)]
        inspector.handle({"image": (data, kind)}, cfg)
        done += 1
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"requests": done, "rps": round(done / elapsed, 3), "ms": round(elapsed * 1000 / done, 2),
            "cpu_ms": round(cpu * 1000 / done, 1)}


def start_server(model: Path, workers: int, threads: int) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "RLAD_PROGRESS": "0", "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "rlad", "serve", str(model), "--port", "0", "--set", f"workers={workers}",
               "--set", f"threads={threads}"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = process.stdout.readline()
    if "serving" not in line:
        process.kill()
        raise RuntimeError(f"rlad serve did not start: {line!r}")
    return process, line.rsplit(" at ", 1)[1].strip()


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_process(url: str, good: list, bad: list, clients: int, seconds: float, malformed: float, seed: int,
                   nice: int, pipe) -> None:
    """The load generator, in its own process (lowered priority by `nice`): `clients` threads, one
    kept-alive HTTP connection each, posting the pre-encoded bodies; sends back the records and its CPU time."""
    import http.client
    from urllib.parse import urlsplit

    os.nice(nice)
    address = urlsplit(url)
    records: list[dict] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def post(connection, body: bytes, content_type: str) -> tuple[int, bool]:
        connection.request("POST", "/v1/predict", body=body,
                           headers={"Content-Type": content_type, "Content-Length": str(len(body))})
        response = connection.getresponse()
        answer = response.read()
        return response.status, response.will_close or not answer

    def client(index: int) -> None:
        rng = np.random.default_rng([seed, index])
        mine = []
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=120)
        while time.monotonic() < deadline:
            if rng.random() < malformed:
                kind, body, content_type = bad[int(rng.integers(len(bad)))]
            else:
                kind, (body, content_type) = "good", good[int(rng.integers(len(good)))]
            started = time.perf_counter()
            try:
                try:
                    status, closed = post(connection, body, content_type)
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    connection.close()  # the server closed the kept-alive connection: one new one, as a browser would
                    status, closed = post(connection, body, content_type)
                if closed:
                    connection.close()
            except (OSError, http.client.HTTPException) as exc:
                status = f"client error: {type(exc).__name__}"
                connection.close()
            mine.append({"kind": kind, "status": status, "ms": (time.perf_counter() - started) * 1000})
        connection.close()
        with lock:
            records.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    times = os.times()
    pipe.send({"records": records, "client_cpu_s": times.user + times.system})
    pipe.close()


def load(url: str, server_pid: int, payloads, clients: int, seconds: float, malformed: float, nice: int,
         seed: int = 0) -> tuple[list[dict], dict]:
    """Run the clients' process against the server; its records and both processes' CPU seconds."""
    import multiprocessing

    good = [multipart("image", name, data, kind) for name, data, kind in payloads]
    bad = bad_requests(payloads[0])
    context = multiprocessing.get_context("spawn")  # a clean interpreter: no torch or ORT threads in the clients
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=client_process,
                              args=(url, good, bad, clients, seconds, malformed, seed, nice, sender))
    server_before = process_cpu_s(server_pid)
    process.start()
    answer = receiver.recv()
    process.join()
    server_cpu = process_cpu_s(server_pid) - server_before
    cores = os.cpu_count() or 1
    return answer["records"], {
        "server_cpu_s": round(server_cpu, 1), "client_cpu_s": round(answer["client_cpu_s"], 1),
        "server_cpu_share": round(server_cpu / (seconds * cores), 3),
        "client_cpu_share": round(answer["client_cpu_s"] / (seconds * cores), 3),
    }


def summarise(records: list[dict], seconds: float) -> dict:
    good = [r for r in records if r["kind"] == "good" and r["status"] == 200]
    latencies = sorted(r["ms"] for r in good)
    statuses = Counter(str(r["status"]) for r in records)
    p50 = float(np.percentile(latencies, 50)) if latencies else float("nan")
    p99 = float(np.percentile(latencies, 99)) if latencies else float("nan")
    return {
        "requests": len(records), "rps": round(len(records) / seconds, 3), "good_ok": len(good),
        "good_rps": round(len(good) / seconds, 3), "p50_ms": round(p50, 1), "p99_ms": round(p99, 1),
        "p99_over_p50": round(p99 / p50, 2) if latencies else None,
        "malformed": sum(r["kind"] != "good" for r in records),
        "malformed_4xx": sum(r["kind"] != "good" and isinstance(r["status"], int) and 400 <= r["status"] < 500
                             for r in records),
        "good_not_200": sum(r["kind"] == "good" and r["status"] != 200 for r in records),
        "status_counts": dict(sorted(statuses.items())),
        "5xx": sum(isinstance(r["status"], int) and r["status"] >= 500 for r in records),
    }


def render(results: Results) -> str:
    from rlad.tables import markdown_table

    meta, rows = results.meta, ok_rows(results.rows)
    table, cpu = [], []
    for row in rows:
        ratio = row["good_rps"] / max(row["inprocess_rps"], 1e-9)
        bracket = row["good_rps"] / max((row["inprocess_rps"] + row["inprocess_after_rps"]) / 2, 1e-9)
        server_cpu_ms = row["server_cpu_s"] * 1000 / max(row["good_ok"], 1)
        table.append({
            "clients' nice": f"+{row['client_nice']}",
            "requests/s (all)": f"{row['rps']:.2f}", "good requests/s": f"{row['good_rps']:.2f}",
            "in-process/s before; after": f"{row['inprocess_rps']:.2f}; {row['inprocess_after_rps']:.2f}",
            "good / in-process before": f"{ratio:.2f} ({'>=' if ratio >= 0.8 else '<'} 0.8)",
            "good / in-process mean of before, after": f"{bracket:.2f}",
            "p50 ms": round(row["p50_ms"]), "p99 ms": round(row["p99_ms"]),
            "p99/p50": f"{row['p99_over_p50']} ({'<' if (row['p99_over_p50'] or 99) < 4 else '>='} 4)",
            "5xx": row["5xx"], "by status": ", ".join(f"{k}: {v}" for k, v in row["status_counts"].items()),
            "load (1 min) during": row["load_1min"],
        })
        cpu.append({
            "clients' nice": f"+{row['client_nice']}",
            "server CPU share": f"{row['server_cpu_share']:.0%}", "clients' CPU share": f"{row['client_cpu_share']:.0%}",
            "server CPU ms / good request": f"{server_cpu_ms:.1f}",
            "in-process CPU ms / request": f"{row['inprocess_cpu_ms']:.1f}",
            "in-process / server CPU per request": f"{row['inprocess_cpu_ms'] / max(server_cpu_ms, 1e-9):.2f}",
            "clients' CPU ms / request": f"{row['client_cpu_s'] * 1000 / max(row['requests'], 1):.1f}",
        })
    first = rows[0] if rows else {}
    body = (f"`rlad serve` on {meta.get('model')} ({meta.get('engine')}; {meta.get('workers')} worker x "
            f"{meta.get('threads')} threads) on loopback for {first.get('seconds', 0):g} s per row. The clients: "
            f"{meta.get('clients')} threads, one kept-alive HTTP connection each (`http.client`), in their own process "
            "with its niceness raised as the row says (+0: the same priority as the server), posting real multipart "
            f"uploads of {meta.get('payloads')} {meta.get('data')} test images, the bodies encoded once before the "
            f"run; {meta.get('malformed'):.0%} of the requests are one of six malformed uploads (not an image, "
            "truncated, zero bytes, wrong field, wrong content type, too many pixels), also encoded once. "
            "In-process: the server's per-request work (`PixelInspector.handle`: decode, model, decision, mask "
            f"PNG) called back to back on the same images for {meta.get('baseline_seconds', 20):g} s right before "
            "each row's load (the goal's reference) and again right after it (how much the host drifted). "
            "Latencies are of the good requests. CPU shares are of all the host's cores over the load window "
            "(server: the whole `rlad serve` process, malformed requests included; clients: their process); "
            "in-process / server CPU per request is the server's overhead in CPU alone (1.00: none), which the "
            "host's other load changes less than it changes requests/s. "
            f"Malformed requests answered 4xx: {sum(r['malformed_4xx'] for r in rows)} of "
            f"{sum(r['malformed'] for r in rows)}; good requests not answered 200: "
            f"{sum(r['good_not_200'] for r in rows)}; the server answered /healthz after each row: "
            f"{all(r.get('alive_after') for r in rows)}.\n\n")
    body += markdown_table(table) + "\n\n" + markdown_table(cpu) + "\n"
    body += failures_text(results.rows)
    if meta.get("busy_note"):
        body += f"\n{meta['busy_note']}\n"
    return body


def main() -> None:
    import httpx

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHARED_DATA / "magnetic_tile"))
    parser.add_argument("--run", help="serve this run folder or .onnx file instead of fitting PatchCore")
    parser.add_argument("--train-images", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--baseline-seconds", type=float, default=20.0)
    parser.add_argument("--malformed", type=float, default=0.1)
    parser.add_argument("--payloads", type=int, default=16)
    parser.add_argument("--client-nice", type=int, nargs="+", default=[10, 0],
                        help="one row per value: niceness added to the clients' process (0: the server's priority)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", help="scratch folder (kept; default: a temporary one)")
    parser.add_argument("--quick", action="store_true", help="tiny model, 5 s: checks the script, not a result")
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--from-results")
    args = parser.parse_args()
    if args.from_results:
        results = Results("serve", args.from_results)
        finish(TITLE, render(results), results, append=not args.no_append)
        return
    os.environ.setdefault("RLAD_BACKBONE_WEIGHTS", str(SHARED_WEIGHTS.parent))
    os.environ.setdefault("RLAD_PROGRESS", "0")
    if args.quick:
        args.seconds, args.baseline_seconds, args.train_images = 5.0, 3.0, 12
    work, holder = work_dir(args.work, "rlad-bench-serve-")
    model = Path(args.run) if args.run else prepare_model(work, Path(args.data), args.train_images, args.quick)
    payloads = good_payloads(Path(args.data), args.payloads)
    results = Results("serve")
    start_load = os.getloadavg()[0]
    results.note(model=model.name, engine="onnxruntime" if model.suffix == ".onnx" else "pytorch",
                 data=Path(args.data).name, payloads=len(payloads), clients=args.clients, malformed=args.malformed,
                 workers=args.workers, threads=args.threads, quick=args.quick, load_at_start=round(start_load, 1),
                 baseline_seconds=args.baseline_seconds,
                 busy_note=(f"The host was busy (1-minute load {start_load:.1f} on {os.cpu_count()} cores at the "
                            "start): absolute rates are low and noisy; each in-process figure was taken on the same "
                            "busy host right before and after its row's load.") if start_load > 1.5 else "")
    inspector = open_in_process(model, args.threads)
    process, url = start_server(model, args.workers, args.threads)
    try:
        for nice in args.client_nice:
            before = in_process_rps(inspector, payloads, args.baseline_seconds)
            load_before = os.getloadavg()[0]
            try:
                records, cpu = load(url, process.pid, payloads, args.clients, args.seconds, args.malformed, nice)
            except Exception as exc:  # noqa: BLE001 - a failed row is recorded, never dropped
                results.add(failed_row({"client_nice": nice}, f"{type(exc).__name__}: {exc}"))
                continue
            load_after = os.getloadavg()[0]
            alive = httpx.get(f"{url}healthz", timeout=30).status_code == 200 and process.poll() is None
            after = in_process_rps(inspector, payloads, args.baseline_seconds)
            results.add({"client_nice": nice, "clients": args.clients, "seconds": args.seconds,
                         "malformed_share": args.malformed, **{f"inprocess_{k}": v for k, v in before.items()},
                         "inprocess_after_rps": after["rps"], **summarise(records, args.seconds), **cpu,
                         "alive_after": alive, "load_1min": f"{load_before:.1f}-{load_after:.1f}"})
    finally:
        process.terminate()
        process.wait(timeout=30)
    finish(TITLE, render(results), results, append=not args.no_append)
    if holder is not None:
        holder.cleanup()


if __name__ == "__main__":
    main()
