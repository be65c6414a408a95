"""A lab of hosts for the swarm workload (W6): each host its own network
namespace, joined to one bridge by its own veth link, shaped to RATE in
both directions (`tc tbf`), so the links, not the two CPU cores, are the
bottleneck, as on a LAN where every laptop has its own uplink.

The bridge lives in the namespace the bench runs in (`just bench` runs it
in a private one); a host's namespace is held by a `sleep` started under
`unshare -n`, and its programs run in it through `nsenter`. No address
outside 10.99.0.0/24 is used, and nothing outlives the lab (`close`).
Needs root (or the user namespace `unshare -rn` gives), `ip` and `tc`.
"""

import subprocess
import time
from pathlib import Path

SUBNET = "10.99.0"
BROADCAST = f"{SUBNET}.255"
RATE = "200mbit"


def sh(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


class Host:
    def __init__(self, index, rate):
        self.index = index
        self.addr = f"{SUBNET}.{index + 1}"
        self.link = f"w6b{index}"  # the bridge's end of this host's link
        inner = f"w6h{index}"
        self.holder = subprocess.Popen(["unshare", "-n", "sleep", "infinity"])
        pid = str(self.holder.pid)
        deadline = time.monotonic() + 5
        # The holder is in its own namespace once its netns link differs.
        while Path(f"/proc/{pid}/ns/net").resolve() == Path("/proc/self/ns/net").resolve():
            if time.monotonic() > deadline:
                raise RuntimeError("unshare -n did not make a network namespace")
            time.sleep(0.01)
        sh("ip", "link", "add", self.link, "type", "veth", "peer", "name", inner)
        sh("ip", "link", "set", inner, "netns", pid)
        sh("ip", "link", "set", self.link, "master", "w6br", "up")
        # The bridge's end sends what the host downloads; the host's end
        # what it uploads: each direction shaped to `rate`.
        shape = ["root", "tbf", "rate", rate, "burst", "256kb", "latency", "50ms"]
        sh("tc", "qdisc", "add", "dev", self.link, *shape)
        inside = ["nsenter", "-t", pid, "-n"]
        sh(*inside, "ip", "link", "set", "lo", "up")
        sh(*inside, "ip", "addr", "add", f"{self.addr}/24", "brd", BROADCAST, "dev", inner)
        sh(*inside, "ip", "link", "set", inner, "up")
        sh(*inside, "tc", "qdisc", "add", "dev", inner, *shape)
        self.prefix = inside

    def bytes_sent(self):
        """Bytes this host has sent on its link (what the bridge received;
        /proc/net/dev is this namespace's, /sys/class/net would not be)."""
        for line in Path("/proc/net/dev").read_text().splitlines():
            name, _, counters = line.partition(":")
            if name.strip() == self.link:
                return int(counters.split()[0])
        raise RuntimeError(f"no link {self.link} in /proc/net/dev")

    def close(self):
        self.holder.kill()
        self.holder.wait()
        subprocess.run(["ip", "link", "del", self.link], stderr=subprocess.DEVNULL)


class Lab:
    """`hosts` hosts on one bridge, each link shaped to `rate`."""

    def __init__(self, hosts, rate=RATE):
        subprocess.run(["ip", "link", "del", "w6br"], stderr=subprocess.DEVNULL)
        sh("ip", "link", "add", "w6br", "type", "bridge")
        sh("ip", "link", "set", "w6br", "up")
        self.hosts = []
        try:
            for i in range(hosts):
                self.hosts.append(Host(i, rate))
        except Exception:
            self.close()
            raise

    def close(self):
        for h in self.hosts:
            h.close()
        subprocess.run(["ip", "link", "del", "w6br"], stderr=subprocess.DEVNULL)
