"""`rag serve --ray`: the same HTTP API (and /mcp) from N answerer replicas on Ray Serve,
behind one ingress.

    client -> Ray Serve's HTTP proxy -> Ingress (1, no CPU) -> Answerer x N (each the whole
                                                  |            app of app.py: its own RAG,
                                                  |            encoder and decoder, loaded once)
                                                  +--------> Writer x 1 (uploads, removals)

Each replica runs the one-process app unchanged (keys, limits, errors, streaming), called in
process with the request's ASGI scope and body (`relay`), and hands back the ASGI messages it
sends, streamed. So there is one API, not a second one to keep in step. The ingress adds what
only it can know: which replica answers (Ray Serve's router sends each request to the less
loaded of two replicas), a request whose replica died (a clear 503, `replica_died`; the
controller starts another), a full line (429), and /readyz listing the replicas.

Every change to an index goes through the one Writer replica, so two replicas never race for
an index's lock (flock is not reliable across the nodes of a shared file system); every
answerer reads the newest committed generation at its next question (rag.index.store: each
read is a snapshot). On several nodes the indexes live on shared storage at the same path on
each (docs/cluster.md)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from contextlib import suppress

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rag.core.errors import RagError
from rag.core.settings import Settings
from rag.http.protocol import ApiError

log = logging.getLogger(__name__)

APP = "rag"
# Requests one answerer replica holds at once (one generating, one waiting). The rest wait in
# the ingress's line, where they can still go to any replica: a replica that dies takes at
# most this many requests with it.
ONGOING_PER_REPLICA = 2
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


def is_write(method: str, path: str) -> bool:
    """Requests that change an index: the document uploads and removals."""
    return method in WRITES and path.startswith("/v1/indexes/")


def parse_replicas(text: str) -> tuple[int, int]:
    """`N` (fixed) or `MIN:MAX` (autoscaled between them)."""
    low, _, high = str(text).partition(":")
    try:
        low_n, high_n = int(low), int(high or low)
    except ValueError:
        raise RagError(f"--replicas takes N or MIN:MAX (whole numbers), not {text!r}") from None
    if not 1 <= low_n <= high_n <= 1024:
        raise RagError(f"--replicas {text}: need 1 <= MIN <= MAX <= 1024")
    return low_n, high_n


async def relay(app, scope: dict, body: bytes):
    """Call the ASGI `app` in this process with one request and yield each ASGI message it
    sends (the response's start, then its body pieces as they are written). The body is
    received whole; after it the app waits for the client, which leaves when this generator
    is closed (the caller left: the app sees `http.disconnect`, a generation stops)."""
    messages: asyncio.Queue = asyncio.Queue()
    left = asyncio.Event()
    delivered = False

    async def receive():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await left.wait()
        return {"type": "http.disconnect"}

    async def run():
        try:
            await app(scope, receive, messages.put)
        except Exception:  # noqa: BLE001 - the app answered it already (its 500), or it is logged here
            log.exception("request %s %s failed", scope.get("method"), scope.get("path"))
        finally:
            await messages.put(None)

    task = asyncio.create_task(run())
    started = False
    try:
        while (message := await messages.get()) is not None:
            started = started or message["type"] == "http.response.start"
            yield message
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                break
        if not started:
            yield {"type": "http.response.start", "status": 500,
                   "headers": [(b"content-type", b"application/json")]}
            yield {"type": "http.response.body", "body": b'{"error": {"message": "the replica failed '
                                                         b'without an answer", "code": "internal_error"}}'}
    finally:
        left.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), 10)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            task.cancel()


class Replica:
    """The whole one-process app (app.create_app) in one Ray Serve replica. `role`: "answerer"
    loads its encoder and decoder before it takes requests (so a started replica answers at
    full speed); "writer" loads the encoder at its first upload."""

    def __init__(self, indexes: list[str], keys, settings: Settings, role: str, registry):
        import ray
        from ray import serve

        from rag.http.app import create_app

        self.role = role
        self.app = create_app(indexes, keys, settings, warm=False, stateless_mcp=True)
        if role == "answerer":
            self.app.state.rag.warm_up()
        self._running = None
        self._stop = asyncio.Event()
        context = ray.get_runtime_context()
        self.info = {"id": serve.get_replica_context().replica_id.unique_id, "role": role, "pid": os.getpid(),
                     "node": context.get_node_id(), "host": socket.gethostname(), "started": time.time(),
                     "actor": context.get_actor_name()}
        ray.get(registry.join.remote(self.info))

    async def _started(self):
        """The app's lifespan (the MCP session manager) runs in its own task, once."""
        if self._running is None:
            ready = asyncio.Event()

            async def lifespan():
                async with self.app.router.lifespan_context(self.app):
                    ready.set()
                    await self._stop.wait()

            self._running = asyncio.create_task(lifespan())
            await ready.wait()

    async def handle(self, scope: dict, body: bytes):
        await self._started()
        async for message in relay(self.app, scope, body):
            yield message


class Registry:
    """Which replicas run now (a Ray actor): each joins when it has started; one whose actor is
    gone (killed, restarted under a new id, scaled down) is dropped when the list is read."""

    def __init__(self):
        self.replicas: dict[str, dict] = {}

    def join(self, info: dict) -> None:
        self.replicas[info["actor"]] = info

    def running(self) -> list[dict]:
        import ray

        alive = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
        for name in [n for n in self.replicas if n not in alive]:
            del self.replicas[name]
        return sorted(self.replicas.values(), key=lambda r: (r["role"], r["started"]))


class Relayed(Response):
    """A replica's ASGI messages, sent on as they come."""

    def __init__(self, first: dict, rest):
        self.first, self.rest = first, rest
        self.background = None

    async def __call__(self, scope, receive, send):
        from ray.exceptions import ActorUnavailableError, RayActorError

        await send(self.first)
        try:
            async for message in self.rest:
                await send(message)
        except (RayActorError, ActorUnavailableError):  # died mid-stream: the client sees the stream end
            log.warning("a replica stopped while streaming %s", scope.get("path"))


class Ingress:
    """One entry for every request: to the Writer for changes, else to an answerer."""

    def __init__(self, answerers, writer, registry, max_body: int, deadline: float):
        self.answerers, self.writer, self.registry = answerers, writer, registry
        self.max_body, self.deadline = max_body, deadline

    async def __call__(self, request: Request):
        path = request.url.path
        if path == "/readyz":
            return await self.readyz()
        if path == "/healthz":
            return JSONResponse({"status": "ok"})
        try:
            body = await self._body(request)
            return await self._forward(request, body)
        except ApiError as e:
            return e.response()

    async def _body(self, request: Request) -> bytes:
        """The body, whole, refused once past the largest a replica would take (its own
        BodyLimit then applies the exact limit for the route)."""
        declared = request.headers.get("content-length", "")
        too_large = ApiError(413, f"the body is over {self.max_body} bytes", "body_too_large")
        if declared.isdigit() and int(declared) > self.max_body:
            raise too_large
        parts, size = [], 0
        async for part in request.stream():
            size += len(part)
            if size > self.max_body:
                raise too_large
            parts.append(part)
        return b"".join(parts)

    async def _forward(self, request: Request, body: bytes):
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
        from ray.serve.exceptions import BackPressureError

        scope = {key: request.scope[key] for key in ("type", "http_version", "method", "scheme", "raw_path",
                                                      "query_string", "headers", "client", "server")
                 if key in request.scope}
        scope.update(root_path="", path=request.url.path)
        target = self.writer if is_write(request.method, request.url.path) else self.answerers
        stream = target.options(stream=True).handle.remote(scope, body)
        try:
            first = await asyncio.wait_for(stream.__anext__(), self.deadline + 30)
        except BackPressureError:
            stream.cancel()
            raise ApiError(429, "every replica is busy and the line is full; ask again shortly",
                           "server_busy", headers={"Retry-After": "2"}) from None
        except (ActorDiedError, ActorUnavailableError, RayActorError) as e:
            log.warning("a replica stopped while holding %s %s: %s", request.method, request.url.path,
                        type(e).__name__)
            raise ApiError(503, "the replica answering this request stopped; ask again (another "
                           "replica answers, and a new one is starting)", "replica_died",
                           headers={"Retry-After": "1"}) from None
        except asyncio.TimeoutError:
            stream.cancel()
            raise ApiError(504, "no replica answered in time", "deadline_exceeded") from None
        return Relayed(first, stream)

    async def readyz(self):
        from ray import serve

        replicas = await self.registry.running.remote()
        answerers = [r for r in replicas if r["role"] == "answerer"]
        status = serve.status().applications.get(APP)
        wanted = {name: {str(state): n for state, n in d.replica_states.items()}
                  for name, d in (status.deployments.items() if status is not None else ())}
        shown = [{k: r[k] for k in ("id", "role", "pid", "node", "host")} | {"state": "running"} for r in replicas]
        body = {"status": "ready" if answerers else "loading", "replicas": shown, "deployments": wanted}
        return JSONResponse(body, status_code=200 if answerers else 503)


def serve(indexes: list[str] | None, host: str, port: int, keys_file: str | None, queue: int | None,
          deadline: float | None, address: str, replicas: str = "1", replica_cpus: float = 1.0,
          replica_gpus: float = 0.0) -> None:
    """`rag serve --ray`: start (or join) Ray, deploy the ingress, the answerers and the writer,
    and serve until Ctrl+C or SIGTERM; then the deployments are taken down (a local Ray stops
    with them). The arguments are app.serve's, and Ray's."""
    from rag.http.app import door_keys
    from rag.http.state import default_indexes
    from rag.index.cluster import connect, disconnect
    from rag.qa import resolve_index

    keys = door_keys(host, keys_file)
    settings = Settings.load(serve_queue=queue, serve_deadline=deadline)
    # a replica's working folder is Ray's, not this one: the indexes go by absolute path
    indexes = [str(resolve_index(spec).absolute()) for spec in indexes or default_indexes()]

    low, high = parse_replicas(replicas)
    connect(None if address in (None, "local") else address)
    import ray
    from ray import serve

    registry = ray.remote(num_cpus=0)(Registry).options(name="rag-replicas", get_if_exists=True).remote()
    threads = max(1, int(replica_cpus)) if settings.threads == 0 else settings.threads
    answerer_settings = settings.replace(threads=threads)
    scaling = ({"num_replicas": low} if low == high else
               {"autoscaling_config": {"min_replicas": low, "max_replicas": high, "target_ongoing_requests": 1}})
    answerers = serve.deployment(Replica, name="Answerer", max_ongoing_requests=ONGOING_PER_REPLICA,
                                 max_queued_requests=settings.serve_queue, health_check_period_s=2,
                                 ray_actor_options={"num_cpus": replica_cpus, "num_gpus": replica_gpus},
                                 **scaling).bind(indexes, keys, answerer_settings, "answerer", registry)
    writer = serve.deployment(Replica, name="Writer", num_replicas=1, max_ongoing_requests=8,
                              health_check_period_s=2, ray_actor_options={"num_cpus": 0}
                              ).bind(indexes, keys, settings, "writer", registry)
    largest = max(settings.serve_max_body_bytes, settings.serve_max_upload_bytes)
    ingress = serve.deployment(Ingress, name="Ingress", num_replicas=1, max_ongoing_requests=10_000,
                               ray_actor_options={"num_cpus": 0}
                               ).bind(answerers, writer, registry, largest, settings.serve_deadline)
    # one ingress: Ray Serve's HTTP proxy on the head node only (a proxy per node would be one
    # more door per node, each on the same port)
    serve.start(proxy_location="HeadOnly", http_options={"host": host.strip("[]"), "port": port})
    signal.signal(signal.SIGTERM, _interrupt)  # `kill`, docker stop: the same clean stop as Ctrl+C
    print(f"rag serve --ray: starting {replicas} answerer replica(s) and a writer; http://{host}:{port}",
          flush=True)
    try:
        serve.run(ingress, name=APP, route_prefix="/", blocking=False)
        print(f"rag serve --ray: ready at http://{host}:{port} (GET /readyz lists the replicas; Ctrl+C stops)",
              flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        with suppress(Exception):
            serve.shutdown()
        disconnect()


def _interrupt(signum, frame):
    raise KeyboardInterrupt
