"""`rag serve` under load: requests per second and p50/p95 latency at 1, 4, 16 and 64
concurrent clients for search and for chat (chat also: time to the first draft event of a
stream), errors by status; searches while 4 clients keep the decoder busy; then one question through `rag ask` (a new process that loads
both models) vs `rag ask --server` vs one API request.

The server is started here on a free port over --index (default: the repository's docs/,
indexed once under benchmarks/.cache/serve-docs); it runs with its defaults (1 decoder,
8 waiting, 429 beyond). Run on demand:

    .venv/bin/python benchmarks/serve.py [--index PATH] [--clients 1,4,16,64] [--seconds 10]

With --ray, the one-process server and `rag serve --ray local --replicas N` for each N of
--replicas (default 1,2), one after the other, in one table, and a projection to more nodes
from one replica's figures (labelled as such):

    .venv/bin/python benchmarks/serve.py --ray --replicas 1,2 --kinds search,chat --clients 1,8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / ".cache"
RAG = [sys.executable, "-m", "rag.cli"]

QUESTIONS = ["How do I add a folder of documents to an index?", "Which encoder is used for Chinese documents?",
             "What happens when a file fails to ingest?", "How are answers grounded in the passages?",
             "Where are uploaded files kept?", "What does the keyword index use?",
             "How is a damaged index rebuilt?", "What runs the decoder?"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def docs_index() -> Path:
    index = CACHE / "serve-docs"
    if not (index / "manifest.json").exists():
        subprocess.run([*RAG, "ingest", str(ROOT / "docs"), str(ROOT / "README.md"), "--index", str(index)],
                       check=True, cwd=ROOT)
    return index


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def load(url: str, model: str, kind: str, clients: int, seconds: float) -> dict:
    """`clients` clients, each asking again as soon as it has an answer, for `seconds`."""
    stop = time.monotonic() + seconds
    latencies, firsts, statuses = [], [], {}
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)

    async def one(c: httpx.AsyncClient, n: int):
        i = n
        while time.monotonic() < stop:
            q = QUESTIONS[i % len(QUESTIONS)]
            i += 1
            start = time.perf_counter()
            if kind == "search":
                r = await c.post(f"{url}/v1/search", json={"index": model, "query": q, "k": 5})
                status = r.status_code
            else:
                first = None
                async with c.stream("POST", f"{url}/v1/chat/completions", json={
                        "model": model, "stream": True, "messages": [{"role": "user", "content": q}]}) as r:
                    status = r.status_code
                    async for line in r.aiter_lines():
                        if first is None and ("rag_draft" in line or '"content": "' in line and '"content": ""' not in line):
                            first = time.perf_counter() - start
                if status == 200 and first is not None:
                    firsts.append(first)
            took = time.perf_counter() - start
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                latencies.append(took)
            elif status == 429:
                await asyncio.sleep(float(r.headers.get("retry-after", 1)))

    async with httpx.AsyncClient(timeout=300, limits=limits) as c:
        started = time.monotonic()
        await asyncio.gather(*(one(c, n) for n in range(clients)))
        elapsed = time.monotonic() - started
    return {"kind": kind, "clients": clients, "ok": len(latencies), "rps": len(latencies) / elapsed,
            "p50_ms": pct(latencies, 50) * 1000, "p95_ms": pct(latencies, 95) * 1000,
            "first_p50_ms": pct(firsts, 50) * 1000 if firsts else None,
            "errors": {s: n for s, n in statuses.items() if s != 200}}


async def mixed(url: str, model: str, clients: int, seconds: float) -> dict:
    """`clients` searching while 4 other clients keep the decoder busy: searches must not wait."""
    search, chat = await asyncio.gather(load(url, model, "search", clients, seconds),
                                        load(url, model, "chat", 4, seconds))
    search["kind"] = "search (4 chatting)"
    search["errors"].update({f"chat {s}": n for s, n in chat["errors"].items()})
    return search


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - start


def start_server(index: Path, extra: list[str], replicas: int = 0) -> tuple[subprocess.Popen, str, float]:
    """`rag serve` over `index` on a free port (with `extra` flags), once /readyz says ready
    (and, under --ray, lists `replicas` answerers: it is ready from the first one on)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    start = time.perf_counter()
    server = subprocess.Popen([*RAG, "serve", "--index", str(index), "--port", str(port), *extra], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            r = httpx.get(url + "/readyz", timeout=2)
            running = [x for x in r.json().get("replicas", []) if x.get("role") == "answerer"]
            if r.status_code == 200 and len(running) >= replicas:
                return server, url, time.perf_counter() - start
        except (httpx.HTTPError, ValueError):  # (Ray's proxy answers in text before the app is up)
            pass
        if server.poll() is not None:
            sys.exit("rag serve exited before it was ready")
        time.sleep(0.3)


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    server.wait(120)


def measure(url: str, model: str, args) -> list[dict]:
    rows = []
    for kind in args.kinds.split(","):
        for clients in (int(c) for c in args.clients.split(",")):
            rows.append(asyncio.run(mixed(url, model, clients, args.seconds)) if kind == "search+chat"
                        else asyncio.run(load(url, model, kind, clients, args.seconds)))
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def print_rows(rows: list[dict], server: str = "") -> None:
    print(("| server " if server else "") + "| kind | clients | requests/s | p50 ms | p95 ms | first draft p50 ms | errors |")
    print(("|---" if server else "") + "|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        first = f"{r['first_p50_ms']:.0f}" if r["first_p50_ms"] is not None else ""
        errors = ", ".join(f"{n}x {s}" for s, n in sorted(r["errors"].items())) or "none"
        print((f"| {r['server']} " if server else "") + f"| {r['kind']} | {r['clients']} | {r['rps']:.1f} | "
              f"{r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {first} | {errors} |")


def on_ray(index: Path, args) -> None:
    """The one-process server and `rag serve --ray local --replicas N` for each N, measured
    one after the other on this machine, and a projection to more nodes (labelled as such)."""
    setups = [("one process", [], 0)] + [(f"ray, {n} replica{'s' * (n > 1)}", ["--ray", "local", "--replicas", str(n)], n)
                                         for n in (int(x) for x in args.replicas.split(","))]
    rows, ready = [], {}
    for label, extra, n in setups:
        server, url, ready[label] = start_server(index, extra, n)
        try:
            for r in measure(url, index.name, args):
                rows.append({**r, "server": label})
        finally:
            stop(server)
    print(f"\nrag serve over {index}, on this machine ({os.cpu_count()} cores); one replica holds "
          f"{args.replica_cpus:g} core(s); ready in " + ", ".join(f"{k} {v:.0f} s" for k, v in ready.items()) + "\n")
    print_rows(rows, server="yes")
    one = [r for r in rows if r["server"] == "ray, 1 replica" and r["kind"] == "chat"]
    if one:
        best = max(r["rps"] for r in one)
        per_node = max(1, int((os.cpu_count() or 1) // args.replica_cpus))
        print(f"\nProjection, not measured: one replica answers {best:.2f} chats/s here (its best above); "
              f"a node like this one holds {per_node} replica(s), so N such nodes would answer about "
              + ", ".join(f"{n} nodes {n * per_node * best:.1f}/s" for n in (2, 4, 8, 16))
              + " if the one ingress keeps up (its own search rate above is its ceiling).")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", help="index to serve (default: docs/ indexed under benchmarks/.cache)")
    ap.add_argument("--clients", default="1,4,16,64")
    ap.add_argument("--seconds", type=float, default=10.0, help="per kind and client count")
    ap.add_argument("--kinds", default="search,chat,search+chat")
    ap.add_argument("--runs", type=int, default=3, help="questions timed per way of asking (0: skip)")
    ap.add_argument("--ray", action="store_true", help="also rag serve --ray local, for each --replicas")
    ap.add_argument("--replicas", default="1,2", help="--ray: replica counts to measure")
    ap.add_argument("--replica-cpus", type=float, default=1.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    index = Path(args.index) if args.index else docs_index()
    if args.ray:
        return on_ray(index, args)
    model = index.name
    server, url, ready_s = start_server(index, [])
    try:
        rss0 = rss_mb(server.pid)
        chunks = httpx.get(f"{url}/v1/indexes/{model}").json()["chunks"]
        rows = measure(url, model, args)
        rss1 = rss_mb(server.pid)

        q = QUESTIONS[0]
        ways = {"`rag ask` (new process)": [*RAG, "ask", q, "--index", str(index), "--json"],
                "`rag ask --server`": [*RAG, "ask", q, "--index", model, "--server", url, "--json"]}
        ask = {name: statistics.median(timed(cmd) for _ in range(args.runs)) for name, cmd in ways.items()} \
            if args.runs else {}
        api = []
        for _ in range(args.runs):
            t = time.perf_counter()
            httpx.post(f"{url}/v1/chat/completions", timeout=300,
                       json={"model": model, "messages": [{"role": "user", "content": q}]}).raise_for_status()
            api.append(time.perf_counter() - t)
        if api:
            ask["API request (httpx)"] = statistics.median(api)
    finally:
        stop(server)

    print(f"\nrag serve over {index} ({chunks} chunks); ready in {ready_s:.1f} s; "
          f"server RSS {rss0:.0f} MB before the load, {rss1:.0f} MB after\n")
    print_rows(rows)
    if ask:
        print("\n| one question | seconds (median of %d) |" % args.runs)
        print("|---|---:|")
    for name, s in ask.items():
        print(f"| {name} | {s:.2f} |")


if __name__ == "__main__":
    main()
