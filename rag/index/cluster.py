"""Ingest on a Ray cluster: the reading, splitting and encoding of changed files run on a pool
of Ray actors (each loads the encoder once; GPU actors where the cluster has GPUs), and the
results stream back, in file order, to the one writer on the driver, which stores and commits
them exactly as the local engine does. Faults are bounded: joining a cluster has a deadline,
and a worker that dies (killed for memory, a crash) is replaced and its files retried one by
one, so the file that kills its worker MAX_TRIES_PER_FILE times fails alone, with a reason. The driver scans, hashes and diffs as always,
so unchanged files are never sent. Files must be readable at the same path on every node (a
shared file system); `pip install -e '.[ray]'` installs Ray."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import socket
import stat
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from rag.core.errors import RagError
from rag.core.paths import cpu_count
from rag.index.prepare import Preparer, embedded, reason

FILES_PER_TASK = 4  # files one actor call reads and encodes together (small: results stream back early)
ACTOR_START_TIMEOUT_S = 600  # a node that cannot start its actors in this time fails the ingest
CONNECT_TIMEOUT_S = 30  # joining a cluster (or starting a local Ray) takes at most this long
MAX_TRIES_PER_FILE = 2  # a file whose worker dies this many times while reading it fails


@dataclass
class Encoded:
    """One file's result from a worker: its chunks and their vectors, or why it failed, and
    the pages its reader passed over (a scan OCR could not read), for the driver's report."""
    path: str
    sha256: str
    chunks: list | None
    vectors: np.ndarray | None
    n_tokens: list[int]
    error: str | None
    node: str
    skipped: list = field(default_factory=list)  # ingest.FileProblem per page not read


def connect(address: str | None, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Join the cluster at `address`, or start a local Ray on this machine's cores; within
    `timeout` seconds, else a one-line RagError (Ray itself retries an absent cluster for
    minutes, filling stderr with warnings). Called before the index's write lock is taken."""
    try:
        import ray
    except ImportError:
        raise RagError("--ray needs Ray: pip install -e '.[ray]' (or pip install 'ray[data]')") from None
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")  # its per-run INFO lines are not the user's business
    if ray.is_initialized():
        return
    if address and address not in ("local", "auto"):
        _reachable(address, timeout)
    kwargs = {"address": address} if address else {"address": "local", "num_cpus": cpu_count(), "include_dashboard": False}
    where = f"the Ray cluster at {address}" if address else "a local Ray"
    try:
        with _deadline(timeout, f"no answer from {where} within {timeout:g} s"):
            ray.init(ignore_reinit_error=True, log_to_driver=False, logging_level=logging.ERROR, **kwargs)
    except RagError:
        _shutdown(ray)
        raise
    except Exception as e:  # noqa: BLE001 - Ray raises many kinds (ConnectionError, OSError, RuntimeError, ...)
        _shutdown(ray)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise RagError(f"could not start {where}: {type(e).__name__}: {first}") from None


def _reachable(address: str, timeout: float) -> None:
    """A TCP connection to host:port of `address` (also ray://host:port), or RagError."""
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise RagError(f"--ray {address}: expected HOST:PORT (e.g. head:6379 or ray://head:10001)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=min(timeout, 10)) as conn:
            # Ray's head (GCS, and the Ray client server) speaks gRPC: to the HTTP/2 preface and an
            # empty SETTINGS frame a gRPC server answers with its own SETTINGS frame (type 4);
            # anything else there would have ray.init retry in C++ for minutes, past any deadline
            conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            head = b""
            while len(head) < 9:
                more = conn.recv(9 - len(head))
                if not more:
                    break
                head += more
    except OSError as e:
        raise RagError(f"cannot reach a Ray cluster at {address} ({e.strerror or e}); start one with "
                       "`ray start --head`, or leave out the address to run Ray on this machine") from None
    if len(head) < 9 or head[3] != 4:
        raise RagError(f"{address} answers, but not as a Ray cluster does (no gRPC); check the address "
                       "(the head's GCS port, 6379 by default, or ray://HOST:10001)")


@contextmanager
def _deadline(seconds: float, message: str):
    """RagError(message) if the block runs longer than `seconds` (SIGALRM: the main thread only;
    elsewhere, as in the web UI's threads, the block runs unbounded)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum, frame):
        raise RagError(message)

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def disconnect() -> None:
    """Leave the cluster (or stop the local Ray) now rather than at exit."""
    import ray

    _shutdown(ray)


def _shutdown(ray) -> None:
    try:
        ray.shutdown()
    except Exception:  # noqa: BLE001 - a half-started Ray may not shut down cleanly either
        pass


def worker_class(settings, encoder_name: str, device: str, threads: int) -> type:
    """The Ray actor class, with its settings bound in (constructor arguments would live in
    the object store, where a restarted actor may no longer find them)."""

    class Worker(_Worker):
        def __init__(self):
            super().__init__(settings, encoder_name, device, threads)

    return Worker


class _Worker:
    """A Ray actor: reads, splits and encodes files with models loaded once."""

    def __init__(self, settings, encoder_name: str, device: str, threads: int):
        os.environ["RAG_THREADS"] = str(threads)  # the actor's share of the node's cores: its threads setting
        from rag.models.encoder import load_encoder

        self.encoder = load_encoder(encoder_name, device, settings.encode_batch_size, settings.encoder_runtime)
        self.preparer = Preparer(self.encoder, settings)
        self.encoder.model  # loaded now, before the first files arrive

    def ready(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def encode(self, files: list[tuple[str, str]]) -> list[Encoded]:
        import ray

        crash_once()
        node = ray.get_runtime_context().get_node_id()
        results = []
        for path, sha in files:
            crash_on(path)
            self.preparer.skipped_pages = []  # this file's, handed back with its result
            try:
                data = read_regular(path)
                if hashlib.sha256(data).hexdigest() != sha:  # what the driver scanned and hashed, or nothing
                    raise RagError("the file changed while it was being ingested; ingest again")
                chunks = self.preparer.split(path, data)
                vectors = self.encoder.encode([embedded(c) for c in chunks])
                results.append(Encoded(path, sha, chunks, vectors,
                                       self.preparer.splitter.counts([c.text for c in chunks]), None, node,
                                       self.preparer.skipped_pages))
            except Exception as e:  # noqa: BLE001 - reported per file, like the local engine
                results.append(Encoded(path, sha, None, None, [], reason(e), node,
                                       self.preparer.skipped_pages))
        return results


def read_regular(path: str) -> bytes:
    """A worker's read of a file the driver found: a regular file only (a FIFO or device put in
    its place does not block the worker); its bytes must then hash as the driver's did, so a
    file or link swapped in since the scan is never indexed."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RagError("no longer a regular file (replaced since it was found); ingest again")
        os.set_blocking(fd, True)
        return f.read()


def crash_once() -> None:
    """Tests kill one worker mid-task: RAG_RAY_CRASH_ONCE=FILE makes the first worker that
    creates FILE die at once (Ray restarts the actor and retries the task)."""
    marker = os.environ.get("RAG_RAY_CRASH_ONCE")
    if marker:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return
        os._exit(1)


def crash_on(path: str) -> None:
    """Tests make a file kill every worker that reads it (as the memory monitor kills a worker
    that a huge file blows up): RAG_RAY_CRASH_ON=TEXT, for paths that contain TEXT."""
    marker = os.environ.get("RAG_RAY_CRASH_ON")
    if marker and marker in path:
        os._exit(1)


def encode_on_ray(files: list[tuple[str, str]], settings, encoder_name: str, address: str | None,
                  share: int = 1) -> Iterator[Encoded]:
    """(path, sha256) of the files to read -> their Encoded results, streamed in order as the
    actors finish them. A batch whose worker dies is split and its files retried one by one
    on a fresh worker; a file that has killed MAX_TRIES_PER_FILE workers comes back failed.
    `share`: this many pools run at once (a sharded index's writers): each takes that share of
    the cluster, at least one worker, so none waits for workers another pool holds."""
    connect(address)
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    threads = max(1, int(settings.ray_cpus_per_worker))
    if gpus and settings.device != "cpu":
        size, per_actor, device = gpus, {"num_gpus": 1, "num_cpus": threads}, "cuda"
    else:
        size, per_actor, device = max(1, int(resources.get("CPU", 1)) // threads), {"num_cpus": threads}, "cpu"
    # restarts are ours, not Ray's (its default for a pool is to restart and retry forever)
    Worker = ray.remote(max_restarts=0, max_task_retries=0, **per_actor)(worker_class(settings, encoder_name, device, threads))
    pool = _Pool(ray, Worker, min(max(1, size // max(1, share)), len(files)))
    queue = deque([list(range(i, min(i + FILES_PER_TASK, len(files))))
                   for i in range(0, len(files), FILES_PER_TASK)])
    tries = [0] * len(files)
    done: dict[int, Encoded] = {}
    running: dict = {}  # object ref -> (actor, indexes)
    following = 0  # the next file to yield: results come back in file order
    try:
        while following < len(files):
            while queue and pool.idle:
                actor, batch = pool.idle.pop(), queue.popleft()
                running[actor.encode.remote([files[i] for i in batch])] = (actor, batch)
            if not running:
                raise RagError("no Ray worker is left to encode the remaining files; see the Ray logs")
            [ref], _ = ray.wait(list(running), num_returns=1)
            actor, batch = running.pop(ref)
            try:
                done.update(zip(batch, ray.get(ref)))
                pool.idle.append(actor)
            except ray.exceptions.RayTaskError as e:  # a bug outside the per-file handling
                done.update({i: Encoded(*files[i], None, None, [], f"worker error: {type(e.cause).__name__}", "")
                             for i in batch})
                pool.idle.append(actor)
            except ray.exceptions.RayError as e:  # the worker's process died (memory, a crash, a lost node)
                pool.replace(actor)
                for i in batch:
                    tries[i] += 1
                    if tries[i] >= MAX_TRIES_PER_FILE:
                        done[i] = Encoded(*files[i], None, None, [], _died(e, tries[i]), "")
                    else:
                        queue.append([i])  # alone: the file that kills its worker is found
            while following in done:
                yield done.pop(following)
                following += 1
    finally:
        pool.close()


def _died(error, times: int) -> str:
    kind = "killed for memory" if "memory" in str(error).lower() else "died"
    return (f"the Ray worker reading it {kind} {times} times (e.g. out of memory on a huge file); "
            "ingest it without --ray, or with more memory per worker")


class _Pool:
    """The encoding actors, started (encoder loaded) before files are handed out; a dead one
    is replaced by a fresh one (bounded: every death costs a file one of its tries)."""

    def __init__(self, ray, worker, size: int):
        self.ray, self.worker = ray, worker
        self.idle: list = []
        self.actors: list = []
        starting = [self._start() for _ in range(size)]
        refs = {actor.ready.remote(): actor for actor in starting}
        ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=ACTOR_START_TIMEOUT_S)
        errors = []
        for ref in ready:
            try:
                ray.get(ref)
                self.idle.append(refs[ref])
            except ray.exceptions.RayError as e:
                errors.append(e)
        for ref in late:
            ray.kill(refs[ref])
        if not self.idle:
            why = (str(errors[0]).strip().splitlines() or [""])[0][:200] if errors else \
                f"none started within {ACTOR_START_TIMEOUT_S} s"
            self.close()
            raise RagError(f"no Ray worker could start ({why}); check that the cluster has free CPUs "
                           "(ray_cpus_per_worker) and that rag is installed on every node")

    def _start(self):
        actor = self.worker.remote()
        self.actors.append(actor)
        return actor

    def replace(self, dead) -> None:
        self.ray.kill(dead)
        self.idle.append(self._start())  # its encoder loads while the first task waits

    def close(self) -> None:
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001
                pass
