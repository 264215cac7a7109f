"""A three-node RabbitMQ cluster of the tests' own on this machine, beside (never touching) the
machine's broker: its own node names, ports, data directories and pid files.

Each node is a `rabbitmq-server -detached` with its own RABBITMQ_* environment (see FACTS in the
project's notes: several nodes on one machine); nodes are stopped by node name through
`rabbitmqctl`, and then by the pid in their pid file if one lingers.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from blogctl.polling import wait_for
from blogctl.supervise import free_port


def cluster_missing() -> str | None:
    """Why no cluster can be started here, or None."""
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        return "RabbitMQ's server is not installed here (rabbitmq-server, rabbitmqctl)"
    if os.geteuid() != 0:
        return "starting RabbitMQ nodes of the tests' own needs root (their data belongs to the rabbitmq user)"
    return None


@dataclass
class Node:
    name: str  # the Erlang node name, e.g. blogc1a2b3c-1@localhost
    port: int  # AMQP
    home: Path

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def pid(self) -> int | None:
        try:
            return int((self.home / "pid").read_text().strip())
        except (OSError, ValueError):
            return None


class RabbitCluster:
    def __init__(self, size: int = 3) -> None:
        tag = uuid.uuid4().hex[:6]
        # Not under pytest's tmp_path: the rabbitmq user must be able to reach its data directories.
        self.root = Path(tempfile.mkdtemp(prefix=f"blog-rabbit-{tag}-"))
        self.root.chmod(0o755)
        self.nodes = [Node(f"blogc{tag}-{i}@localhost", free_port(), self.root / f"node{i}") for i in range(1, size + 1)]

    @property
    def url(self) -> str:
        """Every node's address, in kombu's failover form: a client moves on to the next when one goes."""
        return ";".join(node.url for node in self.nodes)

    def ctl(self, node: Node, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["rabbitmqctl", "-q", "-n", node.name, *args], capture_output=True, text=True,
                              timeout=timeout)

    def _launch(self, node: Node) -> None:
        node.home.mkdir(parents=True, exist_ok=True)
        shutil.chown(node.home, "rabbitmq", "rabbitmq")
        env = {
            **os.environ, "RABBITMQ_NODENAME": node.name, "RABBITMQ_NODE_PORT": str(node.port),
            "RABBITMQ_DIST_PORT": str(free_port()), "RABBITMQ_MNESIA_BASE": str(node.home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(node.home / "log"), "RABBITMQ_PID_FILE": str(node.home / "pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(node.home / "plugins"),
            "RABBITMQ_CONFIG_FILE": str(node.home / "rabbitmq"),
        }
        subprocess.run(["rabbitmq-server", "-detached"], env=env, check=True, capture_output=True, timeout=60)

    def _await(self, node: Node, timeout: float = 90) -> None:
        ready = lambda: self.ctl(node, "await_startup", "--timeout", "5", timeout=30).returncode == 0  # noqa: E731
        if not wait_for(ready, timeout=timeout, interval=0.5):
            raise RuntimeError(f"RabbitMQ node {node.name} did not start within {timeout:g}s; see {node.home}/log")

    def start(self) -> RabbitCluster:
        for node in self.nodes:
            self._launch(node)
        for node in self.nodes:
            self._await(node)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            for step in (("stop_app",), ("join_cluster", first.name), ("start_app",)):
                result = self.ctl(node, *step)
                if result.returncode != 0:
                    raise RuntimeError(f"{node.name}: rabbitmqctl {' '.join(step)} failed: {result.stderr.strip()}")
        self.wait_whole()
        return self

    def running_nodes(self) -> list[str]:
        """The nodes the cluster says are running, as seen from the first node that answers."""
        for node in self.nodes:
            result = self.ctl(node, "eval", "rabbit_nodes:all_running().", timeout=30)
            if result.returncode == 0:
                return sorted(n.strip(" '[]\n") for n in result.stdout.split(",") if n.strip(" '[]\n"))
        return []

    def wait_whole(self, timeout: float = 90) -> None:
        names = sorted(node.name for node in self.nodes)
        if not wait_for(lambda: self.running_nodes() == names, timeout=timeout, interval=0.5):
            raise RuntimeError(f"the cluster is not whole after {timeout:g}s: running {self.running_nodes()}")

    def stop_node(self, node: Node) -> None:
        """Stop the RabbitMQ application on `node` (the Erlang node stays, to start it again)."""
        result = self.ctl(node, "stop_app")
        if result.returncode != 0:
            raise RuntimeError(f"could not stop {node.name}: {result.stderr.strip()}")

    def start_node(self, node: Node) -> None:
        result = self.ctl(node, "start_app")
        if result.returncode != 0:
            raise RuntimeError(f"could not start {node.name}: {result.stderr.strip()}")
        self._await(node)

    def replicas(self, prefix: str) -> dict[str, tuple[list[str], list[str]]]:
        """Each queue and stream whose name starts with `prefix`: (the nodes with a replica, those online)."""
        for node in self.nodes:
            result = self.ctl(node, "list_queues", "name", "members", "online", "--formatter", "json", timeout=30)
            if result.returncode == 0:
                return {q["name"]: (sorted(q["members"]), sorted(q["online"]))
                        for q in json.loads(result.stdout) if q["name"].startswith(prefix)}
        return {}

    def stop(self) -> None:
        """Stop every node: by name through rabbitmqctl, then by its recorded pid if it lingers."""
        for node in self.nodes:
            self.ctl(node, "stop", timeout=60)
        for node in self.nodes:
            pid = node.pid()
            if pid is not None and wait_for(lambda: not _alive(pid), timeout=20) is False:
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
