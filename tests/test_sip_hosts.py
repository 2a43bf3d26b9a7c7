"""Scale-out over several hosts, for real: network namespaces made by the test stand for
three machines on one network (10.77.0.0/24, a bridge on this machine). A front host runs
Kamailio only (`workers.count = 0`, the other hosts in `workers.remote`); two worker hosts
run their own `callbot serve` (`workers.front = "none"`), each with its own hostname; all
record into one PostgreSQL. Calls from a phone on the network spread over both hosts; one
host is killed, and calls go on on the other; every turn is in the shared database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from telephony.testing import ROOT, child_env, first

NET = "10.77.0"
PHONE = f"{NET}.1"            # the bridge: this machine, where the callers run
FRONT = f"{NET}.10"
HOSTS = {"cbh1": f"{NET}.11", "cbh2": f"{NET}.12"}
SECRET = "scale-out-test-secret-0123"
GOODBYE = "/usr/share/asterisk/sounds/fr/vm-goodbye.wav"
BRIDGE = "cbtest0"


def ip(*args: str, ns: str | None = None) -> None:
    cmd = (["ip", "netns", "exec", ns, "ip"] if ns else ["ip"]) + list(args)
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: {res.stderr.strip()}")


class Network:
    """Namespaces cbfront, cbh1, cbh2 on a bridge; removed at the end whatever happened."""

    def __init__(self) -> None:
        self.names = ["cbfront", *HOSTS]
        self.addresses = {"cbfront": FRONT, **HOSTS}

    def up(self) -> None:
        self.down()
        ip("link", "add", BRIDGE, "type", "bridge")
        ip("addr", "add", f"{PHONE}/24", "dev", BRIDGE)
        ip("link", "set", BRIDGE, "up")
        for i, name in enumerate(self.names):
            ip("netns", "add", name)
            ip("link", "set", "lo", "up", ns=name)
            ip("link", "add", f"cbv{i}", "type", "veth", "peer", "name", f"cbv{i}p")
            ip("link", "set", f"cbv{i}p", "netns", name)
            ip("link", "set", f"cbv{i}", "master", BRIDGE)
            ip("link", "set", f"cbv{i}", "up")
            ip("addr", "add", f"{self.addresses[name]}/24", "dev", f"cbv{i}p", ns=name)
            ip("link", "set", f"cbv{i}p", "up", ns=name)

    def down(self) -> None:
        for i, name in enumerate(self.names):
            subprocess.run(["ip", "link", "del", f"cbv{i}"], capture_output=True)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)


class Host:
    """`callbot serve` inside a namespace, with a hostname of its own (UTS namespace)."""

    def __init__(self, name: str, config: Path) -> None:
        self.name = name
        self.events: list[dict] = []
        inner = (f"hostname {name} && exec {sys.executable} -m callbot --config {config} "
                 f"serve")
        self.proc = subprocess.Popen(["ip", "netns", "exec", name, "unshare", "--uts", "sh",
                                      "-c", inner], cwd=ROOT, env=child_env(),
                                     stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.events.append(json.loads(line))
            except json.JSONDecodeError:
                pass

    def wait_for(self, pred, timeout: float = 120.0) -> list[dict]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = [e for e in list(self.events) if pred(e)]
            if found:
                return found
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}: "
                                     f"{self.events[-5:]}")
            time.sleep(0.2)
        raise AssertionError(f"{self.name}: not seen; last events {self.events[-6:]}")

    def answered(self) -> int:
        return sum(e["event"] == "answered" for e in list(self.events))

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def write(path: Path, tables: dict[str, dict]) -> Path:
    lines = []
    for name, values in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def call() -> list[dict]:
    res = subprocess.run([sys.executable, "-m", "callbot", "call", f"sip:callbot@{FRONT}:5060",
                          "--bind", PHONE, "--wav", GOODBYE, "--timeout", "30"],
                         cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=90)
    events = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    assert res.returncode == 0, (res.returncode, events[-5:], res.stderr[-500:])
    return events


@pytest.fixture
def network():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CAP_NET_ADMIN)")
    net = Network()
    try:
        net.up()
    except (RuntimeError, FileNotFoundError) as exc:
        net.down()
        pytest.fail(f"could not build the test network: {exc}", pytrace=False)
    yield net
    net.down()


def test_calls_spread_over_two_hosts_and_survive_one(network, tmp_path):
    import psycopg

    from pg_server import PgServer

    pg = PgServer(listen=f"127.0.0.1,{PHONE}", networks=(f"{NET}.0/24",))
    pg.start()
    hosts: dict[str, Host] = {}
    try:
        url = pg.new_database(host=PHONE)
        common = {"transcripts": {"url": url}}
        for name, addr in HOSTS.items():
            folder = tmp_path / name
            folder.mkdir()
            cfg = write(folder / "callbot.toml", {
                "paths": {"data": str(folder / "data")},
                "sip": {"bind": addr, "port": 5060, "rtp_port_range": 40,
                        "allowed_sources": [f"{NET}.0/24"]},
                "workers": {"count": 1, "front": "none", "bind": addr,
                            "front_secret": SECRET, "base_sip_port": 5070,
                            "base_rtp_port": 30000, "health_interval_s": 1.0,
                            "drain_timeout_s": 2.0},
                **common})
            hosts[name] = Host(name, cfg)
        folder = tmp_path / "cbfront"
        folder.mkdir()
        cfg = write(folder / "callbot.toml", {
            "paths": {"data": str(folder / "data")},
            "sip": {"bind": FRONT, "port": 5060, "allowed_sources": [f"{NET}.0/24"]},
            "workers": {"count": 0, "front_secret": SECRET,
                        "remote": [f"{a}:5070" for a in HOSTS.values()]},
            **common})
        for h in hosts.values():
            ready = h.wait_for(lambda e: e["event"] == "serve_ready")[0]
            assert ready["front"] == "none" and ready["port"] is None and ready["workers"] == 1
        front = Host("cbfront", cfg)
        hosts["cbfront"] = front
        ready = front.wait_for(lambda e: e["event"] == "serve_ready")[0]
        assert ready["workers"] == 0 and ready["remote"] == 2
        checked = front.wait_for(lambda e: e["event"] == "front_checked")[0]
        assert checked["workers"] == [f"sip:{a}:5070" for a in HOSTS.values()]
        time.sleep(3)                                   # a dispatcher probe round

        for _ in range(4):
            first(call(), "hangup")
        spread = {n: hosts[n].answered() for n in HOSTS}
        assert all(v >= 1 for v in spread.values()), spread     # round-robin over the hosts
        assert sum(spread.values()) == 4

        # one host dies with its workers (its supervisor killed, its children with it)
        hosts["cbh1"].stop(signal.SIGKILL)
        before = hosts["cbh2"].answered()
        for _ in range(2):
            first(call(), "hangup")
        assert hosts["cbh2"].answered() == before + 2

        # every turn of the 6 calls is in the one database, recorded by the host that took it
        time.sleep(2)
        with psycopg.connect(url.replace(PHONE, "127.0.0.1")) as conn:
            rows = conn.execute("SELECT c.worker, t.text FROM turns t JOIN calls c ON "
                                "c.id = t.call_id WHERE t.speaker = 'caller'").fetchall()
        workers = {w.split("/")[0] for w, _ in rows}
        assert workers == set(HOSTS), rows
        assert len(rows) == 6 and all("revoir" in (t or "").lower() for _, t in rows), rows
    finally:
        for h in hosts.values():
            h.stop()
        pg.stop()
        pg.cleanup()
