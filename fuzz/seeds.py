#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora, fuzz/corpus/NAME/ (docs/testing.md,
"Fuzzing"): valid samples of each input and the known attacks the negative
tests check (protocols' JOSE attacks, URL spellings, git ref tricks).
Re-run after editing; the files are committed so that a checkout fuzzes
from the same start. Usage: python3 fuzz/seeds.py
"""
import base64
import gzip
import hashlib
import json
import os
import pathlib
import shutil

ROOT = pathlib.Path(__file__).resolve().parent
CORPUS = ROOT / "corpus"


def b64u(b):
    if isinstance(b, str):
        b = b.encode()
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jws(header, payload, sig=b"\x01" * 64):
    return b64u(json.dumps(header)) + "." + b64u(json.dumps(payload)) + "." + b64u(sig)


def write(name, items):
    d = CORPUS / name
    shutil.rmtree(d, ignore_errors=True)  # the corpus is exactly what this script writes
    d.mkdir(parents=True)
    for item in items:
        data = item if isinstance(item, bytes) else item.encode()
        (d / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)


CLAIMS = {"iss": "https://token.actions.githubusercontent.com", "aud": "jitbroker.acme.example",
          "sub": "repo:acme/payments:ref:refs/heads/main", "repository_owner_id": "123",
          "repository_id": "456", "ref": "refs/heads/main", "event_name": "push",
          "run_id": "42", "run_attempt": "1", "repository": "acme/payments",
          "exp": 1893456000, "iat": 1893455700, "jti": "abc"}

TOKENS = [
    jws({"alg": "ES256", "kid": "k1", "typ": "JWT"}, CLAIMS),
    jws({"alg": "RS256", "kid": "k1"}, CLAIMS, b"\x02" * 256),
    jws({"alg": "none"}, CLAIMS, b""),
    jws({"alg": "HS256"}, CLAIMS, b"\x03" * 32),
    jws({"alg": "ES256", "jku": "https://evil.example/jwks"}, CLAIMS),
    jws({"alg": "ES256", "jwk": {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}}, CLAIMS),
    jws({"alg": "ES256", "crit": ["exp"]}, CLAIMS),
    jws({"alg": "ES256", "x5u": "https://evil.example/c"}, CLAIMS),
    b64u('{"alg":"ES256","alg":"none"}') + "." + b64u(json.dumps(CLAIMS)) + "." + b64u(b"x" * 64),
    "a.b",
    "a.b.c.d",
    "..",
    "eyJ=.eyJ.",
    "\xef\xbb\xbf" + jws({"alg": "ES256"}, CLAIMS),
    # RFC 7515 A.3 (ES256) as printed there.
    "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ."
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q",
]
write("jws", TOKENS)

JWKS = [
    {"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
     "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0", "kid": "k1", "alg": "ES256"},
    {"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
     "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0", "d": "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"},
    {"kty": "RSA", "n": "AQAB" * 64, "e": "AQAB", "kid": "r1", "alg": "RS256"},
    {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
    {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
    {"kty": "oct", "k": "c2VjcmV0"},
]
docs = [json.dumps(k) for k in JWKS]
docs.append(json.dumps({"keys": JWKS}))
docs.append('{"keys":[],"keys":[]}')
docs.append(json.dumps({"issuer": "https://issuer.example", "jwks_uri": "https://issuer.example/jwks"}))
docs.append(json.dumps({"issuer": "https://issuer.example", "jwks_uri": "http://169.254.169.254/"}))
write("jwks", docs)

write("json", [
    '{}', '[]', 'null', '0', '-0.0', '1e400', '"\\ud800"', '"\\u0000"',
    '{"a":"x","b":3,"c":true,"d":["p","q"],"e":{}}',
    '{"a":1,"a":2}', '{"x":{"y":{"a":1,"a":1}}}', '[[[[[[[[[[]]]]]]]]]]',
    '[[[[[[[[[]]]]]]]]]', '[[[[[[[[1]]]]]]]]',
    '\xef\xbb\xbf{}', '{"a":"\xc3\x28"}', '{"a":1,}', '{"a":1}/* c */', '18446744073709551616',
])

OPEN = {"agent": {"id": "claude-1", "kind": "coding-agent"},
        "task": {"id": "T-1", "description": "fix the build",
                 "scope": {"resources": ["github://acme/payments"], "max_tier": "pr",
                           "issuers": ["github"], "branches": ["agent/*"], "scopes": ["deploy:*"]}},
        "ttl_seconds": 900, "heartbeat_seconds": 60}
GRANT = {"tool": "github.push", "operation": "write", "resource": "github://acme/payments",
         "issuer": "github", "scope": {"permissions": {"contents": "write"}},
         "parameters": {"branch": "agent/fix", "command": "rm -rf /"}, "ttl_seconds": 300}
write("request_body", [
    "\x00" + json.dumps(OPEN), "\x01" + json.dumps({"status": "working"}),
    "\x02" + json.dumps({"reason": "done", "outcome": "completed"}),
    "\x03" + json.dumps(GRANT), "\x03" + json.dumps(dict(GRANT, tool="shell.exec\u202e")),
    "\x04" + json.dumps({"decision": "approve", "digest": "sha256:" + "0" * 64, "comment": "ok"}),
    "\x05" + json.dumps({"principal": "alice", "reason": "incident"}),
    "\x05" + json.dumps({"all": True, "agent": "x", "reason": "r"}),
    "\x06" + json.dumps(OPEN["task"]["scope"]),
])

TT = "urn:ietf:params:oauth:token-type:"
write("token_form", [
    "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=" + TOKENS[0] +
    "&subject_token_type=" + TT.replace(":", "%3A") + "id_token&audience=payments-deploy&scope=deploy+read",
    "grant_type=urn:ietf:params:oauth:grant-type:token-exchange&subject_token=x&subject_token_type="
    + TT + "jwt&audience=a&audience=b",
    "grant_type=password&username=a&password=b",
    "a=%zz", "a=%00", "=&&=&a", "scope=" + "x " * 70,
    "requested_token_type=" + TT + "access_token&resource=https%3A%2F%2Fevil.example",
])

write("url", [
    "https://token.actions.githubusercontent.com", "https://issuer.example/.well-known/jwks.json",
    "http://127.0.0.1:8080/v1", "http://[::1]:9/x", "http://localhost./", "HTTPS://EXAMPLE.com",
    "https://user@evil.example@good.example/", "https://good.example\\@evil.example/",
    "https://good.example%2f@evil.example", "https://a/%2e%2e/b", "https://a/./b?q#f",
    "https://xn--80ak6aa92e.com", "https://a_b.example", "https://1.2.3.4:65536/",
    "http://0x7f.1/", "http://2130706433/", "https://[fe80::1%25eth0]/", "git://host/repo",
    "https://example.com:443", "https:///path", "https://a/?x=@y",
])

write("time", [
    "2026-11-23T15:04:05Z", "2026-11-23T15:04:05.123456789+02:00", "1970-01-01T00:00:00Z",
    "0000-01-01T00:00:00Z", "9999-12-31T23:59:60Z", "2026-02-29T00:00:00Z", "2026-13-01T00:00:00Z",
    "2026-11-23t15:04:05z", "2026-11-23T15:04:05-23:59", "Sun, 06 Nov 1994 08:49:37 GMT",
    "Sunday, 06-Nov-94 08:49:37 GMT", "2262-04-12T00:00:00Z",
    "Sun, 06 Nov 9591 08:49:37 GMT",  # found by the fuzzer: overflowed FromUnixSeconds
])

GLOBS = [
    ("github://acme/*", "deploy:*", "github://acme/payments"),
    ("deploy:prod*", "deploy:*", "deploy:prod-eu"),
    ("*", "*", "anything"),
    ("jwt://mcp.internal", "jwt://*", "jwt://mcp.internal/x"),
    ("a*b*c", "a*", "aXbYc"),
    ("re:^x", "x", "x"),
    ("argv:rm -rf", "argv:git push -f", "rm -r -f /"),
    ("**", "*:*", "a:b"),
]
seeds = []
for a, b, v in GLOBS:
    # FuzzedDataProvider's ConsumeRandomLengthString: a backslash followed by
    # anything but a backslash ends the string.
    def enc(s):
        return s.replace("\\", "\\\\") + "\\x"
    seeds.append(enc(a) + enc(b) + v)
for cmd in ["rm -rf /tmp/x", "sudo rm -fr ~", "bash -c 'rm -r -f /'", "git push --force origin main",
            "gh pr merge 1 && git push -f", "echo $(rm -rf /)", "x=1 rm --recursive --force /",
            "kubectl delete ns prod", "`rm -rf /`", "rm -r'f' /"]:
    seeds.append("\\x\\x" + cmd)
write("glob", seeds)

TRUST = (pathlib.Path(ROOT) / "trust_fuzz.cc").read_text().split('kPolicy[] = R"(')[1].split(')";')[0]
write("trust", ["\x00" + TRUST, "\x00- name: x\n  issuer: http://evil.example\n", "\x00[]",
                "\x01" + json.dumps(CLAIMS),
                "\x01" + json.dumps(dict(CLAIMS, job_workflow_ref="acme/workflows/.github/workflows/deploy.yml@refs/heads/main")),
                "\x01" + json.dumps(dict(CLAIMS, ref=["refs/heads/main"], repository_id=456)),
                "\x01" + json.dumps({"iss": "https://gitlab.example", "sub": "project_path:acme/x:ref_type:branch:ref:main",
                                     "project_path": "acme/x", "project_id": "77", "pipeline_id": "9"})])

configs = []
for p in ["conf/dev.yaml", "conf/aws.yaml", "bench/bench.yaml"]:
    configs.append((ROOT.parent / p).read_text())
configs += ["{}", "server: {listen: 'x'}", "a: &a [*a]", "policy: {tiers: {read: {control: nope}}}",
            "seal_key: file:/dev/null"]
write("config", configs)

STS_OK = ("<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleResult>"
          "<Credentials><AccessKeyId>ASIA</AccessKeyId><SecretAccessKey>s</SecretAccessKey>"
          "<SessionToken>t</SessionToken><Expiration>2026-12-06T00:00:00Z</Expiration></Credentials>"
          "</AssumeRoleResult></AssumeRoleResponse>")
STS_ERR = ("<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>"
           "<Code>AccessDenied</Code><Message>no</Message></Error><RequestId>r</RequestId></ErrorResponse>")
aws = [STS_OK + "\x01", STS_ERR + "\x01", "<!DOCTYPE x [<!ENTITY a \"b\">]><x>&a;</x>\x01",
       "<a>" * 20 + "</a>" * 20 + "\x01", "<a b='1' b='2'/>\x01", "<a><![CDATA[x]]></a>\x01"]
# SigV4: path, query, headers (ConsumeRandomLengthString pieces), body.
aws.append("/\\xAction=AssumeRole&Version=2011-06-15\\xContent-Type\\xapplication/x-www-form-urlencoded\\xbody\x01\x00\x00")
aws.append("/a/../b//c\\xb=2&a=1&a=%zz\\x\x00\x00\x00")
write("aws", aws)


def pkt(s):
    if isinstance(s, str):
        s = s.encode()
    return b"%04x" % (len(s) + 4) + s


Z = "0" * 40
A = "a" * 40
git = []
cmds = pkt(f"{Z} {A} refs/heads/agent/fix\x00report-status side-band-64k\n") + pkt(f"{A} {Z} refs/heads/old\n") + b"0000"
git.append(cmds + b"PACK" + b"\x00" * 8 + b"\x00")
git.append(pkt(f"{A} {A} refs/heads/../main\x00\n") + b"0000\x00")
git.append(pkt(f"{A} {A} refs/heads/main\x00\n") + pkt(f"{A} {A} refs/heads/main\n") + b"0000\x00")
git.append(pkt("push-cert\x00\n") + b"0000\x00")
git.append(b"ffff" + b"x" * 10 + b"\x00")
adv = (pkt("# service=git-upload-pack\n") + b"0000" +
       pkt(f"{A} HEAD\x00multi_ack side-band-64k symref=HEAD:refs/heads/main object-format=sha1\n") +
       pkt(f"{A} refs/heads/main\n") + pkt(f"{A} refs/tags/v1^{{}}\n") + b"0000")
git.append(adv + b"\x01")
git.append(gzip.compress(cmds, mtime=0) + b"\x02")
git.append(gzip.compress(b"\x00" * 1000000, mtime=0)[:2000] + b"\x02")
write("git", git)

if __name__ == "__main__":
    print("seed corpora written to", CORPUS)
