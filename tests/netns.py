"""Test hosts on one machine: a network namespace each, joined by a bridge, so that services talk
over addresses of their own and a link can be cut and healed while clients write.

Made with iproute2 (`ip netns`, a veth pair per host on a bridge in a switch namespace). This
kernel has no `tc netem` and no iptables, so a partition is a link taken down: a connection
across it times out, with no refusal, as across a real partition. The test process itself
reaches the hosts through a port of its own on each bridge (`observer`), which is never cut.
Every namespace is deleted on `close()`, which removes the links with it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import uuid

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
