"""In-process OTLP trace receivers on loopback (gRPC), and a TCP proxy whose connections start slowly
(a distant or TLS-terminating collector), for exporter tests."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager, suppress
from typing import Any

__all__ = ["Received", "grpc_trace_receiver", "slow_start_proxy"]


class Received:
    """The serialised requests a receiver got, in order."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []


@contextmanager
def grpc_trace_receiver() -> Iterator[tuple[str, Received]]:
    """A gRPC TraceService on a free loopback port: (its http:// endpoint, what it received)."""
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    received = Received()

    class Service(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            received.bodies.append(request.SerializeToString())
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        server.stop(None)


@contextmanager
def slow_start_proxy(target_port: int, delay_seconds: float) -> Iterator[int]:
    """A loopback TCP proxy to `target_port` that relays nothing for `delay_seconds` after accepting
    a connection (as a handshake over a slow link would take): yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    stopping = threading.Event()

    def pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def serve(client: socket.socket) -> None:
        if stopping.wait(delay_seconds):
            client.close()
            return
        upstream = socket.create_connection(("127.0.0.1", target_port))
        threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
        pipe(upstream, client)

    def accept() -> None:
        while not stopping.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(client,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        stopping.set()
        listener.close()
