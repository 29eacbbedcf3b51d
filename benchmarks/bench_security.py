"""What reading the sender's principal costs: a ROUTER receive loop, plain vs CURVE, copying vs
``recv_frames_user`` (first frame zero-copy for its ``User-Id``).  CPU seconds of the receiving
thread per message; the sender runs in another thread.

    python -m benchmarks.bench_security [--messages 50000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time

import zmq

from federation import transport, wire
from federation.keys import ClientCurve, new_keypair, server_curve


def one(n: int, secure: bool, with_user: bool, keys: str) -> float:
    ctx = zmq.Context()
    gate = None
    curve = client = None
    if secure:
        curve = server_curve(f"{keys}/server.key", {"bench": f"{keys}/client.key"})
        gate = curve.start(ctx)
        client = ClientCurve.from_files(f"{keys}/client.key_secret", f"{keys}/server.key")
    router = transport.bind_router(ctx, "tcp://127.0.0.1:*", curve=curve)
    dealer = transport.connect_dealer(ctx, transport.last_endpoint(router), curve=client)
    body = wire.encode_request(
        1, "set_task_status_message", {"task_id": "fin.T_" + "x" * 150, "status_message": "m"}
    )
    key = b"fin.T_" + b"x" * 150

    def send() -> None:
        for _ in range(n):
            dealer.send_multipart([key, body])

    sender = threading.Thread(target=send)
    got = 0
    t0 = time.thread_time()
    sender.start()
    while got < n:
        router.poll(1000)
        while transport.has_input(router):
            if with_user:
                r = transport.recv_frames_user(router)
                assert r is not None and (r[1] == "bench") == secure
            else:
                r2 = transport.recv_frames(router)
                assert r2 is not None
            got += 1
    cpu = time.thread_time() - t0
    sender.join()
    dealer.close(0)
    router.close(0)
    if gate is not None:
        gate.stop()
    ctx.term()
    return cpu / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--messages", type=int, default=50_000)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    keys = tempfile.mkdtemp()
    new_keypair(keys, "server")
    new_keypair(keys, "client")
    cases = [
        ("plain, recv_multipart", False, False),
        ("plain, recv_frames_user", False, True),
        ("CURVE, recv_multipart", True, False),
        ("CURVE, recv_frames_user", True, True),
    ]
    results: dict[str, list[float]] = {c[0]: [] for c in cases}
    for _ in range(a.rounds):  # interleaved
        for name, secure, user in cases:
            results[name].append(one(a.messages, secure, user, keys))
    base = min(results[cases[0][0]])
    for name, values in results.items():
        print(
            f"{name:<26} receive CPU µs/msg: {' / '.join(f'{v:.2f}' for v in values)}  (best {min(values) / base:.2f}x)"
        )


if __name__ == "__main__":
    main()
