"""Schemathesis against vpcep's own /openapi.json, bounded in time.

Starts `vpcep serve` on a fresh data directory, makes an account, logs in for an
X-Auth-Token (schemathesis cannot sign SDK-HMAC requests), and runs schemathesis over
every operation: no response may be a 5xx, and every response must match the schema the
document gives for its status (the success body, or the `Error` body).

    VPCEP_BIN=target/debug/vpcep python tests/openapi/fuzz.py [--max-time SECONDS]

The gateway nodes' snapshot (Bearer node token, long-polled, untyped) is left out.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-time", type=int, default=60, help="schemathesis time budget (seconds)")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()

    binary = Path(os.environ.get("VPCEP_BIN", REPO / "target" / "debug" / "vpcep"))
    tmp = Path(tempfile.mkdtemp(prefix="vpcep-openapi-"))
    data = tmp / "data"
    data.mkdir()
    log = open(tmp / "server.log", "w")
    server = subprocess.Popen(
        [str(binary), "serve", "--data-dir", str(data), "--listen", "127.0.0.1:0",
         "--metrics-listen", "127.0.0.1:0", "--region", "local-1"],
        stdout=subprocess.PIPE, stderr=log, text=True,
    )
    try:
        first = server.stdout.readline()
        m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", first)
        if not m:
            print(f"vpcep did not start: {first!r}; log in {tmp / 'server.log'}", file=sys.stderr)
            return 3
        url = m.group(1)
        account = json.loads(subprocess.run(
            [str(binary), "admin", "account", "create", "fuzz", "--data-dir", str(data)],
            check=True, capture_output=True, text=True, timeout=60).stdout)
        login = {"auth": {"identity": {"methods": ["password"], "password": {
            "user": {"name": account["name"], "password": account["password"]}}}}}
        req = urllib.request.Request(f"{url}/v3/auth/tokens", data=json.dumps(login).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            token = resp.headers["X-Subject-Token"]
        env = dict(os.environ, VPCEP_TOKEN=token, VPCEP_PROJECT_ID=account["project_id"])
        cmd = [
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file", str(HERE / "schemathesis.toml"),
            "run", f"{url}/openapi.json",
            "--checks", "not_a_server_error,response_schema_conformance",
            "--max-time", str(args.max_time),
            "--max-examples", "25",
            "--phases", "examples,coverage,fuzzing",
            "--exclude-operation-id", "node_snapshot",
            "--workers", "2",
            "--request-timeout", "10",
            "--no-color",
            "--report", "junit",
            "--report-dir", str(tmp / "report"),
        ]
        if args.seed is not None:
            cmd += ["--seed", str(args.seed)]
        started = time.monotonic()
        # The budget bounds generation; the margin covers loading and shrinking.
        # Run from the temporary directory: schemathesis keeps its cache in the cwd.
        rc = subprocess.run(cmd, env=env, cwd=tmp, timeout=args.max_time + 120).returncode
        print(f"schemathesis: exit {rc} after {time.monotonic() - started:.0f}s; "
              f"server log and report in {tmp}")
        if server.poll() is not None:
            print(f"vpcep exited during the run ({server.returncode})", file=sys.stderr)
            return 1
        return rc
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        log.close()
        if os.environ.get("VPCEP_KEEP") is None and "rc" in locals() and rc == 0:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
