"""Front door on the sandbox: latency it adds per request (goal p50 <= 1 ms, p99 <= 5 ms) and throughput of the
2-replica embedding service through it against one replica alone, with the same client. Real HAProxy and real
vLLM (CPU build) servers; the cards are SIMULATED, and both replicas share the sandbox's 2 cores.

Runs on the demo sandbox (`make demo` first; or give another sandbox's hosts.yml as the argument): the
ascend910b-1 host's minilm-replicas service, front door port 8100, replicas on 8101 and 8102. Requests alternate
between the two paths so drift hits both alike.
"""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]
INVENTORY = PROJECT / "inventories" / "sandbox" / "hosts.yml"
HOST, DOOR, REPLICA = "ascend910b-1", 8100, 8101
MODEL = "/models/all-MiniLM-L6-v2"


def address(inventory: Path) -> str:
    groups = yaml.safe_load(inventory.read_text())["all"]["children"]
    return next(g["hosts"][HOST]["ansible_host"] for g in groups.values() if HOST in g.get("hosts", {}))


def admin(inventory: Path, host: str, command: str) -> None:
    """A command to the front door's admin socket on the host (what community.general.haproxy sends)."""
    settings = yaml.safe_load(inventory.read_text())["all"]["vars"]
    script = (f"import socket; s = socket.socket(socket.AF_UNIX); "
              f"s.connect('/etc/inferfleet/front-door/{DOOR}/run/admin.sock'); s.sendall(b'{command}\\n'); "
              "print(s.recv(200).decode())")
    subprocess.run(["ssh", "-i", settings["ansible_ssh_private_key_file"], "-o", "StrictHostKeyChecking=no",
                    "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"root@{host}",
                    f'python3 -c "{script}"'], check=True, capture_output=True, timeout=30)


class Client:
    """One kept-alive connection, as a client library would hold it."""

    def __init__(self, host: str, port: int):
        self.connection = http.client.HTTPConnection(host, port, timeout=60)

    def request(self, method: str, path: str, body: dict | None = None) -> float:
        started = time.perf_counter()
        payload = json.dumps(body).encode() if body is not None else None
        self.connection.request(method, path, payload, {"Content-Type": "application/json"} if payload else {})
        response = self.connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {response.status}")
        return time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def added_latency(host: str, count: int = 400) -> None:
    direct, door = Client(host, REPLICA), Client(host, DOOR)
    for path, method, body in (("/health", "GET", None),
                               ("/v1/embeddings", "POST", {"model": MODEL, "input": "front door latency"})):
        for client in (direct, door):  # warm both connections and the server
            for _ in range(10):
                client.request(method, path, body)
        times = {"direct": [], "door": []}
        for _ in range(count):
            times["direct"].append(direct.request(method, path, body))
            times["door"].append(door.request(method, path, body))
        p50 = {k: percentile(v, 50) * 1000 for k, v in times.items()}
        p99 = {k: percentile(v, 99) * 1000 for k, v in times.items()}
        print(f"{method} {path}: {count} requests each way; direct p50 {p50['direct']:.2f} ms p99 "
              f"{p99['direct']:.2f} ms; through the front door p50 {p50['door']:.2f} ms p99 {p99['door']:.2f} ms; "
              f"added p50 {p50['door'] - p50['direct']:.2f} ms (goal <= 1), p99 {p99['door'] - p99['direct']:.2f} ms "
              "(goal <= 5)")


def throughput(host: str, port: int, requests: int = 240, concurrency: int = 8) -> float:
    clients = [Client(host, port) for _ in range(concurrency)]
    body = {"model": MODEL, "input": ["a sentence to embed, long enough to cost the server some work"] * 8}

    def worker(client: Client) -> None:
        for _ in range(requests // concurrency):
            client.request("POST", "/v1/embeddings", body)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, clients))
    return requests / (time.perf_counter() - started)


def main() -> None:
    inventory = Path(sys.argv[1]) if len(sys.argv) > 1 else INVENTORY
    if not inventory.exists():
        sys.exit("no sandbox inventory: run `make demo` first")
    host = address(inventory)
    added_latency(host)
    throughput(host, DOOR, requests=40)  # warm both replicas
    admin(inventory, host, "disable server minilm-replicas-0/minilm-replicas-1")
    try:
        one = throughput(host, DOOR)
    finally:
        admin(inventory, host, "enable server minilm-replicas-0/minilm-replicas-1")
    time.sleep(2)  # the next health check puts it back
    two = throughput(host, DOOR)
    direct = throughput(host, REPLICA)
    print(f"throughput through the front door, 8 concurrent clients: 1 replica (the other in maintenance) "
          f"{one:.1f} req/s, 2 replicas {two:.1f} req/s, ratio {two / one:.2f}; 1 replica direct {direct:.1f} req/s "
          "(the sandbox's replicas share its 2 cores: a second replica adds no compute here)")


if __name__ == "__main__":
    main()
