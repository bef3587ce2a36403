"""Ingest on a Ray cluster: the reading, splitting and encoding of changed files run as a Ray
Data pipeline on a pool of actors (each loads the encoder once; GPU actors where the cluster
has GPUs), and the results stream back to the one writer on the driver, which stores and
commits them exactly as the local engine does. The driver scans, hashes and diffs as always,
so unchanged files are never sent. Files must be readable at the same path on every node (a
shared file system); `pip install -e '.[ray]'` installs Ray."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .errors import RagError

FILES_PER_TASK = 4  # files one actor call reads and encodes together (small: results stream back early)
ACTOR_START_TIMEOUT_S = 600  # a node that cannot start its actors in this time fails the ingest


@dataclass
class Encoded:
    """One file's result from a worker: its chunks and their vectors, or why it failed."""
    path: str
    sha256: str
    chunks: list | None
    vectors: np.ndarray | None
    n_tokens: list[int]
    error: str | None
    node: str


def connect(address: str | None) -> None:
    """Join the cluster at `address`, or start a local Ray on this machine's cores."""
    try:
        import ray
    except ImportError:
        raise RagError("--ray needs Ray: pip install -e '.[ray]' (or pip install 'ray[data]')") from None
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")  # its per-run INFO lines are not the user's business
    if not ray.is_initialized():
        from .models import cpu_count

        kwargs = {"address": address} if address else {"address": "local", "num_cpus": cpu_count(), "include_dashboard": False}
        ray.init(ignore_reinit_error=True, log_to_driver=False, logging_level=logging.ERROR, **kwargs)


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
        os.environ["RAG_THREADS"] = str(threads)  # the actor's share of the node's cores
        from .encoder import Encoder
        from .ingest import Ingestor

        self.encoder = Encoder(encoder_name, device, settings.encode_batch_size, settings.encoder_runtime)
        self.ingestor = Ingestor(None, self.encoder, settings)
        self.encoder.model  # loaded now, before the first files arrive

    def __call__(self, batch: dict) -> dict:
        import ray

        from .ingest import embedded

        crash_once()
        node = ray.get_runtime_context().get_node_id()
        results = []
        for path, sha in zip(batch["path"], batch["sha256"]):
            try:
                with open(path, "rb") as f:
                    data = f.read()
                if hashlib.sha256(data).hexdigest() != sha:
                    raise RagError("the file changed while it was being ingested; ingest again")
                chunks = self.ingestor.split(path, data)
                vectors = self.encoder.encode([embedded(c) for c in chunks])
                results.append(Encoded(path, sha, chunks, vectors,
                                       self.ingestor.splitter.counts([c.text for c in chunks]), None, node))
            except Exception as e:  # noqa: BLE001 - reported per file, like the local engine
                results.append(Encoded(path, sha, None, None, [], self.ingestor.reason(e), node))
        return {"result": np.array([pickle.dumps(r) for r in results], dtype=object)}


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


def encode_on_ray(files: list[tuple[str, str]], settings, encoder_name: str, address: str | None) -> Iterator[Encoded]:
    """(path, sha256) of the files to read -> their Encoded results, streamed in order as the
    actors finish them."""
    connect(address)
    import ray
    import ray.data

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    threads = max(1, int(settings.ray_cpus_per_worker))
    if gpus and settings.device != "cpu":
        pool, per_actor, device = gpus, {"num_gpus": 1, "num_cpus": threads}, "cuda"
    else:
        pool, per_actor, device = max(1, int(resources.get("CPU", 1)) // threads), {"num_cpus": threads}, "cpu"
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # the same chunk ids as the local engine
    ctx.enable_progress_bars = False
    ctx.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S  # every actor has its encoder loaded before files are handed out
    ds = ray.data.from_items([{"path": p, "sha256": s} for p, s in files],
                             override_num_blocks=max(1, min(len(files), pool * 4)))
    ds = ds.map_batches(worker_class(settings, encoder_name, device, threads), batch_size=FILES_PER_TASK,
                        # Ray Data restarts an actor that dies and retries its files (max_restarts=-1)
                        compute=ray.data.ActorPoolStrategy(size=min(pool, len(files)), max_tasks_in_flight_per_actor=1),
                        **per_actor)
    for batch in ds.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=2):
        for blob in batch["result"]:
            yield pickle.loads(blob)
