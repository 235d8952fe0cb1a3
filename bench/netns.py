"""Hosts of their own on this machine: a network namespace per process, on a private bridge.

`Network(["web-1", "web-2"])` creates, in the root namespace, a Linux bridge with a private
/24 (10.213.N.0/24, N from this process's pid, moved on if that subnet is in use), the bridge
at .1; and for each name a network namespace with a veth pair whose outer end is on the
bridge, its inner end `eth0` at .2, .3, ..., loopback up and a default route via .1. A
process started with `exec_prefix(name)` then has its own address, its own loopback (its
127.0.0.1 is nobody else's) and its own hostname (a UTS namespace of its own, named after
its netns); it reaches what runs in the root namespace only at the bridge address, and is
reached only at its own.

Names are short and unique per run (`iwv<pid % 10000>`, netns `iwvNNNN-web1`, veth
`iwvNNNN-w1`), and whatever a dead run of the same name left behind is deleted before
anything is created. `close()` (or leaving the `with`) deletes the namespaces, the veths and
the bridge; stop the processes in them first, or a namespace lives on while they do.

It needs root and iproute2 (`ip`); `unavailable()` says why it cannot be used here, or None.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass

PREFIX = "iwv"
SUBNET_BASE = "10.213"


@dataclass(frozen=True)
class Host:
    name: str  # as the caller knows it: "web-1"
    netns: str  # "iwv1234-web1", also its hostname
    veth: str  # the outer end, on the bridge
    address: str


def _ip(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *argv], check=check, capture_output=True, text=True, timeout=20)


def unavailable() -> str | None:
    """Why network namespaces cannot be used here (not root, no `ip`, creating one fails)."""
    if os.geteuid() != 0:
        return "not root"
    for tool in ("ip", "unshare", "hostname"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    probe = f"{PREFIX}probe{uuid.uuid4().hex[:6]}"
    try:
        made = _ip("netns", "add", probe, check=False)
        if made.returncode != 0:
            return f"`ip netns add` failed: {made.stderr.strip()}"
        bridge = _ip("link", "add", probe, "type", "bridge", check=False)
        if bridge.returncode != 0:
            return f"`ip link add ... type bridge` failed: {bridge.stderr.strip()}"
    finally:
        _ip("link", "delete", probe, check=False)
        _ip("netns", "delete", probe, check=False)
    return None


def _subnets_in_use() -> set[int]:
    """The N of every 10.213.N.x address on this machine."""
    out = _ip("-4", "-o", "addr", "show").stdout
    used = set()
    for word in out.split():
        if word.startswith(f"{SUBNET_BASE}."):
            with contextlib.suppress(ValueError, IndexError):
                used.add(int(word.split(".")[2]))
    return used


class Network:
    """A bridge and a netns per name; `with Network([...]) as net:` or `open()` / `close()`."""

    def __init__(self, names: list[str], tag: int | None = None) -> None:
        if not 1 <= len(names) <= 250:
            raise ValueError("1-250 hosts")
        self.tag = os.getpid() % 10000 if tag is None else tag
        self.bridge = f"{PREFIX}{self.tag}"
        self.subnet_n = 0
        self.hosts: dict[str, Host] = {}
        self.names = names
        self.opened = False

    @property
    def gateway(self) -> str:
        """The bridge's address: where the root namespace's services are reached from a host."""
        return f"{SUBNET_BASE}.{self.subnet_n}.1"

    @property
    def subnet(self) -> str:
        return f"{SUBNET_BASE}.{self.subnet_n}.0/24"

    def _netns(self, index: int) -> str:
        # "web-1" -> "iwv1234-web1": also the host's name, so letters, digits and dashes.
        return f"{self.bridge}-{''.join(c for c in self.names[index - 1] if c.isalnum())}"

    def _delete_stale(self) -> None:
        """What a run of the same name that died left: namespaces, veths, the bridge."""
        for index in range(1, len(self.names) + 1):
            _ip("netns", "delete", self._netns(index), check=False)
            _ip("link", "delete", f"{self.bridge}-w{index}", check=False)
        _ip("link", "delete", self.bridge, check=False)

    def open(self) -> Network:
        self._delete_stale()
        used = _subnets_in_use()
        n = self.tag % 250 + 1
        while n in used:
            n = n % 250 + 1
        self.subnet_n = n
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            self.opened = True
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for index, name in enumerate(self.names, start=1):
                self.hosts[name] = self._add_host(index, name)
        except BaseException:
            self.close()
            raise
        return self

    def _add_host(self, index: int, name: str) -> Host:
        netns, veth = self._netns(index), f"{self.bridge}-w{index}"
        address = f"{SUBNET_BASE}.{self.subnet_n}.{index + 1}"
        inner = f"{veth}p"
        _ip("netns", "add", netns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", netns)
        _ip("link", "set", veth, "master", self.bridge)
        _ip("link", "set", veth, "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("-n", netns, "link", "set", inner, "name", "eth0")
        _ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "route", "add", "default", "via", self.gateway)
        return Host(name, netns, veth, address)

    def exec_prefix(self, name: str) -> list[str]:
        """What to put before a command to run it on host `name`. Each step execs the next
        (ip netns exec, unshare without --fork, sh's exec), so the pid a Popen gets is the
        command's own and a signal to it reaches the command."""
        netns = self.hosts[name].netns
        return [
            *("ip", "netns", "exec", netns, "unshare", "--uts", "--", "sh", "-c"),
            'hostname "$0" && exec "$@"',
            netns,
        ]

    def pids(self, name: str) -> set[int]:
        """The processes in host `name`'s namespace (`ip netns pids`)."""
        out = _ip("netns", "pids", self.hosts[name].netns, check=False).stdout
        return {int(word) for word in out.split() if word.isdigit()}

    def close(self) -> None:
        """Deletes the namespaces, the veths and the bridge (what is already gone is fine)."""
        if not self.opened:
            return
        self._delete_stale()
        self.hosts = {}
        self.opened = False

    def describe(self) -> str:
        return f"bridge {self.bridge} at {self.gateway}/24; " + "; ".join(
            f"{h.name} at {h.address} in netns {h.netns}" for h in self.hosts.values()
        )

    def __enter__(self) -> Network:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
