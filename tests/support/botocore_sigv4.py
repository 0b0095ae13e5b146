#!/usr/bin/env python3
"""Recomputes the SigV4 signatures of requests the broker sent, with Debian's
python3-botocore: an implementation nobody in this project wrote.

Input (a JSON file named on the command line): {"region", "service",
"access_key_id", "secret_access_key", "session_token" (or ""), "requests":
[{"method", "path", "headers" (the signed ones, lower-case names), "body",
"authorization"}]}. Exits 0 when every signature matches, 1 (printing the
first mismatch) otherwise, 2 on bad input. Run by tests/unit/aws_sts_test.cc.
"""
import json
import re
import sys

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: botocore_sigv4.py FILE", file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    creds = Credentials(spec["access_key_id"], spec["secret_access_key"],
                        spec.get("session_token") or None)
    auth = SigV4Auth(creds, spec["service"], spec["region"])
    if not spec["requests"]:
        print("no requests to check", file=sys.stderr)
        return 2
    for i, r in enumerate(spec["requests"]):
        m = re.search(r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$", r["authorization"])
        if not m:
            print(f"request {i}: unreadable Authorization header", file=sys.stderr)
            return 1
        signed, got = m.group(1), m.group(2)
        host = r["headers"]["host"]
        req = AWSRequest(method=r["method"], url=f"http://{host}{r['path']}",
                         data=r["body"].encode("utf-8"),
                         headers={h: r["headers"][h] for h in signed.split(";")})
        # Never add_auth(): it would stamp the current time.
        req.context["timestamp"] = r["headers"]["x-amz-date"]
        want = auth.signature(auth.string_to_sign(req, auth.canonical_request(req)), req)
        if want != got:
            print(f"request {i}: botocore computes {want}, the broker sent {got}", file=sys.stderr)
            print(auth.canonical_request(req), file=sys.stderr)
            return 1
    print(f"botocore: {len(spec['requests'])} signatures match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
