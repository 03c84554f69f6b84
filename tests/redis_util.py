"""A real ``redis-server`` for tests: free loopback port, no persistence, stopped by PID.

``RedisServer`` can be stopped and started again on the same port (the outage tests).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT = 10.0


def _ping(port: int, password: str | None = None) -> bool:
    """A raw RESP PING, so this helper does not depend on the code under test."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            if password:
                s.sendall(f"AUTH {password}\r\n".encode())
                if not s.recv(64).startswith(b"+OK"):
                    return False
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    def __init__(self, workdir: Path, password: str | None = None, extra: list[str] | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.password = password
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.proc is None, "already running"
        args = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--logfile",
            str(self.log),
            "--daemonize",
            "no",
            *self.extra,
        ]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log.read_text(errors='replace')[-2000:]}")
            if _ping(self.port, self.password):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not answer PING in time")

    def kill(self) -> None:
        """A crash: SIGKILL by PID, no shutdown work (the cluster failover tests)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # Bounded wait until the port no longer answers, so an outage test really has an outage.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _ping(self.port, self.password):
            time.sleep(0.05)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if not Path(REDIS_SERVER).exists():
        pytest.skip("redis-server is not installed")
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def _command(port: int, *args: str, timeout: float = 1.0) -> bytes:
    """One RESP command on a raw socket; the whole reply as bytes ('' on failure)."""
    parts = [f"*{len(args)}\r\n".encode()] + [f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"".join(parts))
            data = b""
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                if data.startswith((b"+", b"-", b":")) and data.endswith(b"\r\n"):
                    break
                if data.startswith(b"$"):
                    head, _, rest = data.partition(b"\r\n")
                    if int(head[1:]) < 0 or len(rest) >= int(head[1:]) + 2:
                        break
            return data
    except OSError:
        return b""


class RedisClusterServers:
    """A real Redis Cluster on loopback: ``masters`` masters with one replica each
    (``redis-server --cluster-enabled yes`` and ``redis-cli --cluster create``), a short
    ``cluster-node-timeout`` so a failover takes about a second. Every node is a
    ``RedisServer`` (its own free port and cluster-bus port), stopped by PID."""

    def __init__(self, workdir: Path, masters: int = 3, node_timeout_ms: int = 1000) -> None:
        self.nodes: list[RedisServer] = []
        for i in range(masters * 2):
            d = workdir / f"node{i}"
            d.mkdir(parents=True, exist_ok=True)
            node = RedisServer(d)
            node.extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(d / "nodes.conf"),
                "--cluster-node-timeout",
                str(node_timeout_ms),
                "--cluster-port",
                str(free_port()),
                # A replica that lost its master for a while may still be promoted (no data age limit).
                "--cluster-replica-validity-factor",
                "0",
                "--cluster-require-full-coverage",
                "yes",
            ]
            self.nodes.append(node)
        self.masters = masters

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
        out = subprocess.run(
            [REDIS_CLI, "--cluster", "create", *addrs, "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout[-2000:]} {out.stderr[-2000:]}")
        self.wait_ok(timeout=30)

    def state(self, node: RedisServer) -> dict[str, str]:
        text = _command(node.port, "CLUSTER", "INFO").decode(errors="replace")
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("$"))

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Every running node sees the cluster ok, every slot served, and agrees on the masters."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = [n for n in self.nodes if n.proc is not None]
            states = [self.state(n) for n in running]
            if all(s.get("cluster_state") == "ok" and s.get("cluster_slots_ok") == "16384" for s in states):
                return
            time.sleep(0.1)
        raise RuntimeError(f"cluster not ok after {timeout}s: {[self.state(n) for n in self.nodes]}")

    def master_of(self, key: str) -> RedisServer:
        """The running node that serves ``key``'s slot as master, from a running node's
        ``CLUSTER NODES`` (the line flagged master, not failed, whose slot ranges hold it)."""
        by_port = {n.port: n for n in self.nodes if n.proc is not None}
        for node in by_port.values():
            reply = _command(node.port, "CLUSTER", "KEYSLOT", key)
            slot = int(reply[1:].strip())
            text = _command(node.port, "CLUSTER", "NODES").decode(errors="replace")
            for line in text.splitlines()[1:]:
                fields = line.split()
                if len(fields) < 9 or "master" not in fields[2] or "fail" in fields[2]:
                    continue
                port = int(fields[1].split("@", 1)[0].rsplit(":", 1)[1])
                for rng in fields[8:]:
                    lo, _, hi = rng.partition("-")
                    if lo.isdigit() and int(lo) <= slot <= int(hi or lo) and port in by_port:
                        return by_port[port]
        raise RuntimeError(f"no running master serves {key!r}")

    def wait_replicated(self, master: RedisServer, timeout: float = 10.0) -> bool:
        """True once ``master``'s replica is online and has acknowledged every write so far
        (its offset equals the master's ``master_repl_offset``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = _command(master.port, "INFO", "replication").decode(errors="replace")
            info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
            replica = dict(kv.split("=", 1) for kv in info.get("slave0", "").split(",") if "=" in kv)
            if replica.get("state") == "online" and replica.get("offset") == info.get("master_repl_offset", "").strip():
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    if not Path(REDIS_SERVER).exists() or not Path(REDIS_CLI).exists():
        pytest.skip("redis-server / redis-cli are not installed")
    cluster = RedisClusterServers(tmp_path / "cluster")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
