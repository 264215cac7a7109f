"""Test hosts on one machine: a network namespace each, joined by a bridge, so that services talk
over addresses of their own and a link can be cut and healed while clients write.

Made with iproute2 (`ip netns`, a veth pair per host on a bridge in a switch namespace). This
kernel has no `tc netem` and no iptables, so a partition is a link taken down: a connection
across it times out, with no refusal, as across a real partition. The test process itself
reaches the hosts through a port of its own on each bridge (`observer`), which is never cut.
Every namespace is deleted on `close()`, which removes the links with it.

`postgres_on(network, host, lan)` runs a PostgreSQL server of its own on a host (the machine's
server listens on 127.0.0.1 of the root namespace only), for the writers' tables.
"""
from __future__ import annotations

import os
import pwd
import shlex
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from blogctl import polling
from blogctl.formation import Formation

SUBNET = "10"  # 10.77.x.0/24, 10.78.x.0/24, ...: addresses that exist only on the links these tests make


def netns_missing() -> str | None:
    """Why no test hosts can be made here, or None."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"blogprobe{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot make a network namespace here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


class Network:
    """Named LANs (a bridge each, in one switch namespace) and named hosts with a link on some of them.

    `address(host, lan)` is where a host is reached on a LAN, `run(host, argv)` the command that runs
    argv on it, `cut(host, lan)` / `heal(host, lan)` take its link on that LAN down and up. The test
    process has its own link on every LAN (`observer`), never cut.
    """

    def __init__(self, lans: tuple[str, ...] = ("lan",)) -> None:
        self.tag = uuid.uuid4().hex[:5]
        third = int(self.tag, 16) % 250 + 1  # a /24 per LAN of this network's own
        self.subnets = {lan: f"{SUBNET}.{i}.{third}" for i, lan in enumerate(lans, start=77)}
        self.switch = f"blogsw{self.tag}"
        self.hosts: dict[str, str] = {}  # name -> namespace
        self._ports: dict[tuple[str, str], str] = {}  # (host, lan) -> its port on the bridge
        self._numbers: dict[str, int] = {}
        ip("netns", "add", self.switch)
        try:
            self._make_lans(lans)
        except BaseException:
            self.close()
            raise

    def _make_lans(self, lans: tuple[str, ...]) -> None:
        for i, lan in enumerate(lans):
            bridge, observer = f"br{i}", f"bo{self.tag}{i}"
            ip("-n", self.switch, "link", "add", bridge, "type", "bridge")
            ip("-n", self.switch, "link", "set", bridge, "up")
            ip("link", "add", observer, "type", "veth", "peer", "name", f"obs{i}", "netns", self.switch)
            ip("-n", self.switch, "link", "set", f"obs{i}", "master", bridge)
            ip("-n", self.switch, "link", "set", f"obs{i}", "up")
            ip("addr", "add", f"{self.subnets[lan]}.254/24", "dev", observer)
            ip("link", "set", observer, "up")

    def add(self, name: str, lans: tuple[str, ...] | None = None) -> None:
        """A new host, with a link on each of `lans` (default: every LAN)."""
        number = len(self.hosts) + 1
        namespace = f"blog{self.tag}{name}"
        ip("netns", "add", namespace)
        self.hosts[name] = namespace  # from here on, close() removes it
        ip("-n", namespace, "link", "set", "lo", "up")
        for i, lan in enumerate(self.subnets):
            if lans is not None and lan not in lans:
                continue
            port, device = f"h{number}l{i}", f"eth{i}"
            ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", device, "netns", namespace)
            ip("-n", self.switch, "link", "set", port, "master", f"br{i}")
            ip("-n", self.switch, "link", "set", port, "up")
            ip("-n", namespace, "addr", "add", f"{self.subnets[lan]}.{number}/24", "dev", device)
            ip("-n", namespace, "link", "set", device, "up")
            self._ports[name, lan] = port
        self._numbers[name] = number

    def address(self, name: str, lan: str) -> str:
        return f"{self.subnets[lan]}.{self._numbers[name]}"

    def run(self, name: str, argv: list[str]) -> list[str]:
        """`argv` run on host `name` (`ip netns exec` execs it: the pid is the command's own)."""
        return ["ip", "netns", "exec", self.hosts[name], *argv]

    def cut(self, name: str, lan: str) -> None:
        ip("-n", self.switch, "link", "set", self._ports[name, lan], "down")

    def heal(self, name: str, lan: str) -> None:
        ip("-n", self.switch, "link", "set", self._ports[name, lan], "up")

    def close(self) -> None:
        for namespace in self.hosts.values():
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.switch], capture_output=True)  # takes the observers' pairs too
        for i in range(len(self.subnets)):
            subprocess.run(["ip", "link", "del", f"bo{self.tag}{i}"], capture_output=True)  # if one lingered


# PostgreSQL on a test host. The machine's server listens on 127.0.0.1 in the root namespace only,
# so a test that puts the database on a host of its own runs a private server there.

POSTGRES_USER = "postgres"
POSTGRES_PORT = 5432  # the default: on the host's own address, in its own namespace, nothing else holds it


def postgres_bindir() -> Path | None:
    """Where PostgreSQL's server programs (initdb, postgres) are: `pg_config --bindir`, else the newest
    /usr/lib/postgresql/<version>/bin (Debian's pg_config may name /usr/bin, which has neither)."""
    candidates = []
    if shutil.which("pg_config"):
        named = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10).stdout.strip()
        if named:
            candidates.append(Path(named))
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versions, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0, reverse=True)
    return next((d for d in candidates if (d / "initdb").exists() and (d / "postgres").exists()), None)


def postgres_server_missing() -> str | None:
    """Why no private PostgreSQL server can run on a test host here, or None."""
    if postgres_bindir() is None:
        return "no PostgreSQL server programs (initdb, postgres) found: `apt-get install postgresql`"
    try:
        pwd.getpwnam(POSTGRES_USER)
    except KeyError:
        return f"no `{POSTGRES_USER}` user to run a PostgreSQL server as (the postgresql package makes one)"
    if shutil.which("setpriv") is None:
        return "no setpriv(1) (util-linux) to run the server as the postgres user"
    return None


@contextmanager
def postgres_on(network: Network, host: str, lan: str, database: str = "blog") -> Iterator[str]:
    """A PostgreSQL server of its own on test host `host`, listening on its address on `lan`, with
    `database` made; yields that database's URL, and stops the server (fast shutdown) on leaving.

    The cluster lives in a fresh directory under /tmp owned by the postgres user (pytest's own
    directories are root's alone), trusts every address of the network's LANs, and runs with
    `fsync=off`: it is thrown away after the test, and what the tests kill are the services, not
    the database's host. It runs under blogctl's supervisor, as the services do, in its own process
    group; `setpriv` (which execs, unlike `runuser`) makes the recorded pid the server's own.
    """
    bindir = postgres_bindir()
    as_postgres = ["setpriv", f"--reuid={POSTGRES_USER}", f"--regid={POSTGRES_USER}", "--init-groups"]
    root = Path(tempfile.mkdtemp(prefix="blog-postgres-"))
    data = root / "data"
    server = None
    try:
        shutil.chown(root, POSTGRES_USER, POSTGRES_USER)
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", POSTGRES_USER, "-A", "trust", "-E", "UTF8", "--locale=C",
                  "--no-sync"]
        made = subprocess.run([*as_postgres, *initdb], capture_output=True, text=True, timeout=120)
        if made.returncode != 0:
            raise RuntimeError(f"initdb failed: {made.stderr.strip()[-500:]}")
        with open(data / "pg_hba.conf", "a") as hba:
            hba.writelines(f"host all all {subnet}.0/24 trust\n" for subnet in network.subnets.values())
        address = network.address(host, lan)
        server = Formation(_procfile(root, "postgres", [
            *as_postgres, str(bindir / "postgres"), "-D", str(data), "-c", f"listen_addresses={address}",
            "-c", f"port={POSTGRES_PORT}", "-c", f"unix_socket_directories={root}", "-c", "fsync=off",
            "-c", "max_connections=300",
        ]), run_dir=root / "run", env=dict(os.environ), prefix={"postgres": network.run(host, [])})
        server.start("postgres")
        url = f"postgresql://{POSTGRES_USER}@{address}:{POSTGRES_PORT}"
        try:
            polling.wait_until(lambda: _create_database(url, database), timeout=60, interval=0.1,
                               message=f"the PostgreSQL server on {host} to accept connections")
        except polling.WaitTimedOut as exc:
            raise RuntimeError(f"{exc}; its log ends: {server.log_path('postgres').read_text()[-800:]}") from None
        yield f"{url}/{database}"
    finally:
        if server is not None:
            server.stop("postgres", signal.SIGINT)  # fast shutdown: the clients are gone or going
        shutil.rmtree(root, ignore_errors=True)


def _procfile(directory: Path, name: str, argv: list[str]) -> Path:
    path = directory / "Procfile"
    path.write_text(f"{name}: exec {shlex.join(argv)}\n")
    return path


def _create_database(url: str, database: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(f"{url}/postgres", autocommit=True, connect_timeout=2) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
    except psycopg.OperationalError:
        return False  # not accepting connections yet
    return True
