"""Beam's Python SDK worker pool for ``--environment_type=EXTERNAL``, safe when worker ids repeat.

Usage: ``python runners/worker_pool.py --service_port PORT`` (tests/portability_fixtures.py starts it).

Beam 2.77's ``worker_pool_main`` keeps one process per ``worker_id`` and kills that process on ``StopWorker``.
But every Spark executor numbers its environments on its own ("1-1", "2-1", ...), so two executors ask the
one pool for workers with the same id: the second start overwrites the first in the pool's table, and the
first executor's ``StopWorker`` then kills the *second* executor's worker in the middle of its task, whose
Spark task waits for it forever (seen here as a build-pairs run hung for 13 minutes). This pool starts the same
worker command but keeps every process of an id, and on ``StopWorker`` lets them end on their own: a worker
exits when the runner closes its control channel, which the runner does before it calls ``StopWorker``. A
worker that is still alive a grace period later belongs to another executor's running task and is left alone;
exited ones are reaped. The pool's process group (the workers included) is ended by whoever started it.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import threading
import time

from apache_beam.portability.api import beam_fn_api_pb2
from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer

LOG = logging.getLogger("wit.worker_pool")


class RepeatedIdWorkerPool(BeamFnExternalWorkerPoolServicer):
    """``BeamFnExternalWorkerPoolServicer`` (process mode) whose ``StopWorker`` never kills a running worker."""

    def __init__(self, grace_s: float = 30.0) -> None:
        # data_buffer_time_limit_ms=-1: what worker_pool_main passes (no time-based flush of data buffers)
        super().__init__(use_process=True, data_buffer_time_limit_ms=-1)
        self._grace_s = grace_s
        self._lock = threading.Lock()
        self._by_id: dict[str, list[subprocess.Popen]] = {}

    def StartWorker(self, start_worker_request, unused_context):  # noqa: N802 (gRPC method name)
        response = super().StartWorker(start_worker_request, unused_context)
        proc = self._worker_processes.pop(start_worker_request.worker_id, None)  # the base class's table: unused
        if proc is not None:
            with self._lock:
                self._by_id.setdefault(start_worker_request.worker_id, []).append(proc)
        return response

    def StopWorker(self, stop_worker_request, unused_context):  # noqa: N802 (gRPC method name)
        worker_id = stop_worker_request.worker_id
        threading.Thread(target=self._reap, args=(worker_id,), daemon=True).start()
        return beam_fn_api_pb2.StopWorkerResponse()

    def _reap(self, worker_id: str) -> None:
        deadline = time.monotonic() + self._grace_s
        while time.monotonic() < deadline:
            with self._lock:
                procs = self._by_id.get(worker_id, [])
                alive = [p for p in procs if p.poll() is None]
                self._by_id[worker_id] = alive
            if len(alive) < len(procs) or not alive:
                return  # one of this id's workers ended (the one this stop was for)
            time.sleep(0.5)
        LOG.info("worker %s: %d process(es) still running after %.0f s (another executor's)", worker_id,
                 len(alive), self._grace_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service_port", type=int, required=True, help="port of the worker pool service")
    parser.add_argument("--grace_s", type=float, default=30.0,
                        help="how long StopWorker waits for a worker of that id to exit on its own")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    servicer = RepeatedIdWorkerPool(grace_s=args.grace_s)
    server = servicer_server(servicer, args.service_port)
    LOG.info("worker pool listening on port %d", args.service_port)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop(0)
    return 0


def servicer_server(servicer: RepeatedIdWorkerPool, port: int):
    """A gRPC server on ``localhost:port`` serving ``servicer`` (what ``BeamFnExternalWorkerPoolServicer.start``
    does for its own class)."""
    from concurrent import futures

    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                         options=[("grpc.http2.max_pings_without_data", 0), ("grpc.http2.max_ping_strikes", 0)])
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(servicer, server)
    server.add_insecure_port(f"localhost:{port}")
    server.start()
    return server


if __name__ == "__main__":
    sys.exit(main())
