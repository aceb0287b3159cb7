#!/usr/bin/env python3
"""CPU regression check that cannot flake on a noisy machine: instruction
counts, not seconds.

Runs the service (the debug build, dev mode, `cosmos.auth = key`) under
callgrind on the out-of-process emulator (.ci/cosmosdb-server), so only the
service's own instructions are counted. After a warm-up the counters are
zeroed, a fixed workload runs, and the counters are dumped:
  - 200 publishes (POST /app, one at a time, one hot feed);
  - the app feed read from the start in pages of 100, twice;
  - 200 requests that do nothing (GET /health/live): the service's floor,
    its layers, span and log line.
It fails when instructions per publish, per served event or per request are more than 15 %
above .ci/cpu-baseline.json. After a change that makes the service cheaper
(or a justified cost), update the baseline with --update and say why in the
commit.

    .ci/cpu-check.py [--update]
"""

import glob
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE = os.path.join(ROOT, ".ci", "cpu-baseline.json")
# CPU_CHECK_BIN profiles another build (the release one, say); the baseline
# is for the debug build CI has. CPU_CHECK_KEEP=DIR keeps the callgrind
# files there for callgrind_annotate.
BIN = os.environ.get("CPU_CHECK_BIN") or os.path.join(ROOT, "target", "debug", "altinn-events")
KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
PUBLISHES = 200
PAGE = 100
REQUESTS = 200
TOLERANCE = 1.15


def free_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Client:
    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def request(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        if body is not None:
            body = json.dumps(body)
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, dict(resp.getheaders()), data


def totals(path):
    with open(path) as f:
        for line in f:
            m = re.match(r"(?:totals|summary):\s+(\d+)", line)
            if m:
                return int(m.group(1))
    raise SystemExit(f"no totals in {path}")


def dump(pid, out_dir, seen):
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    for _ in range(600):
        files = set(glob.glob(os.path.join(out_dir, "cg.*"))) - seen
        done = [f for f in files if os.path.getsize(f) > 0 and not f.endswith(".tmp")]
        if done:
            time.sleep(0.5)
            seen.update(done)
            return sum(totals(f) for f in done)
        time.sleep(0.1)
    raise SystemExit("callgrind wrote no dump")


def main():
    update = "--update" in sys.argv[1:]
    if not shutil.which("valgrind"):
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "valgrind"], check=True, env=env)
    if not os.environ.get("CPU_CHECK_BIN"):
        # Always (a no-op when current): the production build writes the
        # same path, and a stale binary would be measured.
        subprocess.run(["cargo", "build", "--locked", "--bin", "altinn-events"], check=True, cwd=ROOT)
    if not os.path.isdir(os.path.join(ROOT, ".ci", "cosmosdb-server", "node_modules")):
        subprocess.run(["npm", "ci", "--quiet", "--no-audit", "--no-fund"], check=True,
                       cwd=os.path.join(ROOT, ".ci", "cosmosdb-server"))
    work = tempfile.mkdtemp()
    emulator = subprocess.Popen(
        ["node", os.path.join(ROOT, ".ci", "cosmosdb-server", "server.js"), "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    service = None
    try:
        import select

        ready, _, _ = select.select([emulator.stdout], [], [], 30)
        assert ready, "the emulator did not start within 30 s"
        line = emulator.stdout.readline().strip()
        assert line.startswith("LISTENING "), f"the emulator said {line!r}"
        endpoint = f"http://{line.split(' ', 1)[1]}/"
        port = free_port()
        key_file = os.path.join(work, "issuer.pem")
        # A fixed issuer key: generating one under callgrind takes long.
        subprocess.run(
            ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key_file],
            check=True,
            capture_output=True,
        )
        env = dict(
            os.environ,
            AZURE_COSMOS_BINARY_ENCODING_ENABLED="false",
            # As the image sets it: the Cosmos SDK builds errors for absent
            # optional headers, and with backtraces on, each captures one
            # (a quarter of a publish's instructions).
            RUST_LIB_BACKTRACE="0",
            # Logs as deployed (helm: info, JSON), written to /dev/null.
            EVENTS__LOG_FILTER="info",
            EVENTS__LOG_FORMAT="json",
            EVENTS__COSMOS__AUTH="key",
            EVENTS__COSMOS__ENDPOINT=endpoint,
            EVENTS__COSMOS__KEY=KEY,
            EVENTS__COSMOS__PROVISION="true",
            EVENTS__COSMOS__REPAIR_INTERVAL_SECONDS="0",
            EVENTS__DELIVERY__ENABLED="false",
            EVENTS__LOCALTEST__KEY_FILE=key_file,
        )
        service = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={work}/cg.%p",
                BIN,
                "dev",
                "--addr",
                f"127.0.0.1:{port}",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(work, "valgrind.log"), "w"),
        )
        deadline = time.time() + 600
        while True:
            try:
                status, _, _ = Client(port).request("GET", "/health/ready")
                if status == 200:
                    break
            except OSError:
                pass
            assert service.poll() is None, open(os.path.join(work, "valgrind.log")).read()[-3000:]
            assert time.time() < deadline, "the service did not become ready under callgrind"
            time.sleep(1)
        c = Client(port)
        user = c.request("GET", "/localtest/token/user?userId=1337&partyId=1337&authLevel=2")[2].decode()
        access = c.request("GET", "/localtest/token/platform?issuer=ttd&app=apps-test")[2].decode()
        owner = c.request("GET", "/localtest/token/org?org=ttd&scope=altinn:events/ttd/apps-test")[2].decode()
        auth = {"Authorization": f"Bearer {user}", "PlatformAccessToken": access}

        def publish(n):
            body = {
                "specversion": "1.0",
                "type": "app.instance.process.completed",
                "subject": "/party/1337",
                "source": f"https://ttd.apps.altinn.no/ttd/apps-test/instances/1337/00000000-0000-4000-8000-{n:012}",
                "data": {"n": n},
            }
            status, _, data = c.request("POST", "/events/api/v1/app", body, auth)
            assert status == 201, (status, data)

        def read_all():
            served, path = 0, f"/events/api/v1/app/ttd/apps-test?after=0&size={PAGE}"
            while True:
                status, headers, data = c.request("GET", path, headers={"Authorization": f"Bearer {owner}"})
                assert status == 200, (status, data)
                page = json.loads(data)
                if not page:
                    return served
                served += len(page)
                nxt = headers["next"]
                path = nxt[nxt.index("/events/"):]

        for n in range(20):
            publish(1_000_000 + n)
        read_all()
        pid = service.pid
        seen = set(glob.glob(os.path.join(work, "cg.*")))
        subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
        for n in range(PUBLISHES):
            publish(n)
        per_publish = dump(pid, work, seen) / PUBLISHES
        subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
        served = read_all() + read_all()
        per_event = dump(pid, work, seen) / served
        subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
        for _ in range(REQUESTS):
            status, _, _ = c.request("GET", "/health/live")
            assert status == 200, status
        per_request = dump(pid, work, seen) / REQUESTS
    finally:
        if service:
            service.kill()
            service.wait()
        emulator.kill()
        emulator.wait()
        keep = os.environ.get("CPU_CHECK_KEEP")
        if keep:
            shutil.copytree(work, keep, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)

    now = {
        "instructions_per_publish": round(per_publish),
        "instructions_per_served_event": round(per_event),
        "instructions_per_request": round(per_request),
    }
    build = os.path.relpath(BIN, ROOT)
    print(f"service instructions ({build}): {now['instructions_per_publish']:,} per publish, "
          f"{now['instructions_per_served_event']:,} per served event (pages of {PAGE}), "
          f"{now['instructions_per_request']:,} per request that does nothing (GET /health/live)")
    if os.environ.get("CPU_CHECK_BIN"):
        return
    if update or not os.path.exists(BASELINE):
        with open(BASELINE, "w") as f:
            json.dump(now, f, indent=2)
            f.write("\n")
        print(f"baseline written: {BASELINE}")
        return
    base = json.load(open(BASELINE))
    failed = False
    for k, v in now.items():
        if k not in base:
            failed = True
            print(f"FAIL {k} has no baseline: run .ci/cpu-check.py --update")
            continue
        ratio = v / base[k]
        print(f"  {k}: {ratio:.2f}x the baseline ({base[k]:,})")
        if ratio > TOLERANCE:
            failed = True
            print(f"FAIL {k} grew {100 * (ratio - 1):.0f} % (more than {100 * (TOLERANCE - 1):.0f} %)")
    if failed:
        sys.exit(1)
    print("PASS CPU check")


if __name__ == "__main__":
    main()
