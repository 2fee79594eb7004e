#!/usr/bin/env python3
"""The REST contract checked against the real server with schemathesis.

Starts target/debug/lanchat on a loopback port with a temporary data directory,
creates the first admin through the setup link, and runs schemathesis (its
path given as the first argument) against the served /api/v1/openapi.json as
that admin, with a fixed seed and a bounded number of examples: no answer may
be a 5xx, and every answer must have a documented status, content type,
headers and body schema. Exits with schemathesis's status.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

SEED = "20250113"
MAX_EXAMPLES = "20"
CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
])
# Operations that would sign the fuzzer out (its own session), leaving the
# rest of the run to test only 401s.
EXCLUDED_PATHS = ["/api/v1/auth/logout", "/api/v1/auth/sessions/{id}"]
PASSWORD = "contract check password"


def post(base, path, body):
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def main():
    schemathesis = sys.argv[1]
    binary = os.path.join("target", "debug", "lanchat")
    with tempfile.TemporaryDirectory(prefix="lanchat-contract-") as tmp:
        data_dir = os.path.join(tmp, "data")
        env = {k: v for k, v in os.environ.items() if not k.startswith("LANCHAT_")}
        # The fuzzer registers and logs in far more than a person would.
        env.update({
            "LANCHAT_AUTH_REGISTER_MAX_PER_ADDRESS": "100000",
            "LANCHAT_LOG_LEVEL": "warn",
            # Uploads must not depend on how full the CI machine's disk is.
            "LANCHAT_LIMITS_MIN_FREE_DISK_BYTES": "0",
        })
        with open(os.path.join(tmp, "server.log"), "w") as log:
            server = subprocess.Popen(
                [binary, "--data-dir", data_dir, "--listen", "127.0.0.1:0"],
                stdout=subprocess.PIPE, stderr=log, env=env, text=True,
            )
            try:
                first = server.stdout.readline().strip()
                prefix = "lanchat listening on http://"
                if not first.startswith(prefix):
                    raise SystemExit(f"lanchat did not start: {first!r}")
                base = "http://" + first[len(prefix):]
                link_file = os.path.join(data_dir, "setup-link.txt")
                for _ in range(300):
                    if os.path.exists(link_file):
                        break
                    time.sleep(0.1)
                with open(link_file) as f:
                    token = f.read().strip().split("/setup?token=", 1)[1]
                admin = post(base, "/api/v1/setup", {
                    "setup_token": token, "username": "contract", "password": PASSWORD,
                })
                command = [
                    schemathesis, "run", base + "/api/v1/openapi.json",
                    "--header", "Authorization: Bearer " + admin["access_token"],
                    "--seed", SEED,
                    "--max-examples", MAX_EXAMPLES,
                    "--checks", CHECKS,
                    "--workers", "1",
                    "--request-timeout", "30",
                    "--no-color",
                ]
                for path in EXCLUDED_PATHS:
                    command += ["--exclude-path", path]
                status = subprocess.call(command)
            finally:
                server.terminate()
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    server.kill()
        if status != 0:
            with open(os.path.join(tmp, "server.log")) as f:
                sys.stderr.write("--- server log (last lines) ---\n")
                sys.stderr.write("".join(f.readlines()[-40:]))
    return status


if __name__ == "__main__":
    sys.exit(main())
