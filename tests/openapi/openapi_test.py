#!/usr/bin/env python3
"""Contract test of docs/openapi.yaml against the jitbroker daemon.

    openapi_test.py BROKER_BINARY

1. The document is a well-formed OpenAPI 3.1 document, as far as can be
   checked without a full OpenAPI validator: version, info, paths, every
   local $ref resolves, every operation has responses and declares its path
   parameters, operation ids are unique, security requirements name declared
   schemes, every schema is accepted by the JSON Schema 2020-12 meta-schema,
   and the examples validate against their schemas.
2. It cannot drift from the server: the (method, path) pairs of the route
   table in broker/http/server.cc (`Route("GET", "/…"` and `AddRoute(…)`)
   must be exactly the document's, apart from the proxy prefixes /git/ and
   /github/ (served outside the table).
3. A real broker (BROKER_BINARY, loopback only, a temporary directory) is
   exercised over HTTP with urllib: success and error answers of every route.
   EVERY answer is validated: its status must be declared for the operation
   the request path and method select (or, for a path or method no route
   serves, the listener's NoRoute / MethodNotAllowed answers), its body must
   validate against the schema of its content type, and declared required
   headers must be present and valid.

Exit status: 0 pass, 1 fail, 77 skip (jsonschema or yaml missing).
Only the standard library, jsonschema (4.10 or later) and PyYAML are used.
"""

import base64
import collections
import hashlib
import hmac
import http.server
import json
import math
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

try:
    import jsonschema
    import yaml
except ImportError as e:  # pragma: no cover
    print(f"SKIP: {e} (install python3-jsonschema and python3-yaml)")
    sys.exit(77)
try:  # jsonschema >= 4.18 resolves $refs with `referencing`; older ones (Debian 12's 4.10) not
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012
except ImportError:
    Registry = None

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC_PATH = os.path.join(REPO, "docs", "openapi.yaml")
SERVER_CC = os.path.join(REPO, "broker", "http", "server.cc")
DOC_URI = "urn:jitbroker:openapi"
PROXY_PREFIXES = ("/git/", "/github/")
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

Validator = jsonschema.Draft202012Validator
FORMATS = getattr(Validator, "FORMAT_CHECKER", None) or jsonschema.draft202012_format_checker


class Failures:
    def __init__(self):
        self.items = []

    def add(self, msg):
        self.items.append(msg)
        print("FAIL: " + msg, flush=True)


FAIL = Failures()


# ---------------------------------------------------------------------------
# Document helpers


def unescape_pointer_token(t):
    return t.replace("~1", "/").replace("~0", "~")


def escape_pointer_token(t):
    return t.replace("~", "~0").replace("/", "~1")


def pointer_get(doc, pointer):
    node = doc
    if pointer in ("", "/"):
        return node
    for raw in pointer.lstrip("/").split("/"):
        tok = unescape_pointer_token(urllib.parse.unquote(raw))
        if isinstance(node, list):
            node = node[int(tok)]
        else:
            node = node[tok]
    return node


def ref_pointer(ref):
    if ref.startswith(DOC_URI + "#"):
        return ref[len(DOC_URI) + 1:]
    if ref.startswith("#"):
        return ref[1:]
    raise ValueError(f"not a local $ref: {ref}")


def resolve(doc, obj, depth=0):
    """Follows a Reference Object chain; returns the object referred to."""
    while isinstance(obj, dict) and "$ref" in obj:
        depth += 1
        if depth > 20:
            raise ValueError("$ref loop")
        obj = pointer_get(doc, ref_pointer(obj["$ref"]))
    return obj


def absolutize_refs(node):
    """A copy whose local $refs name the document's URI, so that any schema in
    it validates on its own through the registry."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith("#"):
                out[k] = DOC_URI + v
            else:
                out[k] = absolutize_refs(v)
        return out
    if isinstance(node, list):
        return [absolutize_refs(v) for v in node]
    return node


def operations(doc):
    for path, item in doc.get("paths", {}).items():
        item = resolve(doc, item)
        for m in METHODS:
            if m in item:
                yield path, m, item, item[m]


def template_names(path):
    return re.findall(r"\{([^}]+)\}", path)


# ---------------------------------------------------------------------------
# 1. Static checks


def check_document(doc):
    n_before = len(FAIL.items)
    if not re.fullmatch(r"3\.1\.\d+", str(doc.get("openapi", ""))):
        FAIL.add(f"openapi must be 3.1.x, is {doc.get('openapi')!r}")
    info = doc.get("info")
    if not isinstance(info, dict) or not isinstance(info.get("title"), str) or not isinstance(
            info.get("version"), str):
        FAIL.add("info.title and info.version are required strings")
    if not isinstance(doc.get("paths"), dict) or not doc["paths"]:
        FAIL.add("paths is missing or empty")
        return
    for p in doc["paths"]:
        if not p.startswith("/"):
            FAIL.add(f"path {p!r} does not start with /")

    # Every $ref resolves (only local references are used).
    def walk_refs(node, where):
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                try:
                    pointer_get(doc, ref_pointer(ref))
                except (KeyError, IndexError, ValueError) as e:
                    FAIL.add(f"{where}: $ref {ref!r} does not resolve ({e})")
            for k, v in node.items():
                walk_refs(v, f"{where}/{escape_pointer_token(str(k))}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk_refs(v, f"{where}/{i}")

    walk_refs(doc, "#")

    # A null value is almost always YAML's reading of a flow mapping with an
    # unquoted comma ({description: a, b} makes a key " b"): refuse it outside
    # example values.
    def walk_nulls(node, where):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("example", "examples", "default", "const", "enum"):
                    continue
                w = f"{where}/{escape_pointer_token(str(k))}"
                if v is None:
                    FAIL.add(f"{w}: null value (an unquoted comma in a flow mapping?)")
                walk_nulls(v, w)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk_nulls(v, f"{where}/{i}")

    walk_nulls(doc, "#")
    if len(FAIL.items) > n_before:
        return  # the rest would only repeat the broken references

    schemes = doc.get("components", {}).get("securitySchemes", {})
    op_ids = collections.Counter()
    for path, method, item, op in operations(doc):
        where = f"{method.upper()} {path}"
        if op.get("operationId"):
            op_ids[op["operationId"]] += 1
        responses = op.get("responses")
        if not isinstance(responses, dict) or not responses:
            FAIL.add(f"{where}: no responses")
            continue
        for code, resp in responses.items():
            if not re.fullmatch(r"[1-5](\d\d|XX)|default", str(code)):
                FAIL.add(f"{where}: response key {code!r} is not a status code")
            if not isinstance(resolve(doc, resp).get("description"), str):
                FAIL.add(f"{where} {code}: a response needs a description")
        params = [resolve(doc, p) for p in item.get("parameters", []) + op.get("parameters", [])]
        declared = {p["name"] for p in params if p.get("in") == "path"}
        for p in params:
            if p.get("in") == "path" and p.get("required") is not True:
                FAIL.add(f"{where}: path parameter {p['name']} must be required")
            if "schema" not in p and "content" not in p:
                FAIL.add(f"{where}: parameter {p.get('name')} has no schema")
        if declared != set(template_names(path)):
            FAIL.add(f"{where}: path parameters {sorted(declared)} do not match the template")
        for req in op.get("security", doc.get("security", [])):
            for name in req:
                if name not in schemes:
                    FAIL.add(f"{where}: security scheme {name!r} is not declared")
    for oid, n in op_ids.items():
        if n > 1:
            FAIL.add(f"operationId {oid} is used {n} times")

    # Every schema is a JSON Schema 2020-12 schema.
    schemas = []  # (where, schema)
    comps = doc.get("components", {})
    for name, s in comps.get("schemas", {}).items():
        schemas.append((f"#/components/schemas/{name}", s))

    def media_schemas(content, where):
        for mt, media in (content or {}).items():
            if "schema" in media:
                schemas.append((f"{where} content {mt}", media["schema"]))

    def header_schemas(headers, where):
        for hname, h in (headers or {}).items():
            h = resolve(doc, h)
            if "schema" in h:
                schemas.append((f"{where} header {hname}", h["schema"]))

    def response_schemas(resp, where):
        resp = resolve(doc, resp)
        media_schemas(resp.get("content"), where)
        header_schemas(resp.get("headers"), where)

    for name, p in comps.get("parameters", {}).items():
        if "schema" in p:
            schemas.append((f"#/components/parameters/{name}", p["schema"]))
    header_schemas(comps.get("headers"), "#/components/headers")
    for name, r in comps.get("responses", {}).items():
        response_schemas(r, f"#/components/responses/{name}")
    for path, item in doc["paths"].items():
        for p in item.get("parameters", []):
            p = resolve(doc, p)
            if "schema" in p:
                schemas.append((f"{path} parameter {p['name']}", p["schema"]))
    for path, method, item, op in operations(doc):
        where = f"{method.upper()} {path}"
        for p in op.get("parameters", []):
            p = resolve(doc, p)
            if "schema" in p:
                schemas.append((f"{where} parameter {p['name']}", p["schema"]))
        if "requestBody" in op:
            media_schemas(resolve(doc, op["requestBody"]).get("content"), f"{where} requestBody")
        for code, resp in op["responses"].items():
            response_schemas(resp, f"{where} {code}")
    unique = {id(s): (where, s) for where, s in schemas}
    for where, s in unique.values():
        try:
            Validator.check_schema(s)
        except jsonschema.exceptions.SchemaError as e:
            FAIL.add(f"{where}: not a JSON Schema 2020-12 schema: {e.message}")
    return len(unique)


def check_examples(doc, contract):
    """Named examples of media types, and `examples` of component schemas,
    must validate against their schema."""
    n = 0
    comps = doc.get("components", {})
    for name, s in comps.get("schemas", {}).items():
        for i, ex in enumerate(s.get("examples", []) if isinstance(s, dict) else []):
            n += 1
            contract.validate_value({"$ref": f"#/components/schemas/{name}"}, ex,
                                    f"#/components/schemas/{name} examples[{i}]")

    def media(content, where):
        nonlocal n
        for mt, m in (content or {}).items():
            for ename, ex in (m.get("examples") or {}).items():
                ex = resolve(doc, ex)
                if "value" in ex and "schema" in m:
                    n += 1
                    contract.validate_value(m["schema"], ex["value"], f"{where} {mt} example {ename}")

    for name, r in comps.get("responses", {}).items():
        media(r.get("content"), f"#/components/responses/{name}")
    for path, method, item, op in operations(doc):
        for code, resp in op["responses"].items():
            if "$ref" not in resp:
                media(resp.get("content"), f"{method.upper()} {path} {code}")
    return n


# ---------------------------------------------------------------------------
# 2. Route table drift


def normalize(path):
    return re.sub(r"\{[^}]*\}", "{}", path)


def server_routes():
    src = open(SERVER_CC, encoding="utf-8").read()
    found = set()
    for m in re.finditer(r'\b(?:Route|AddRoute)\(\s*"([A-Z]+)"\s*,\s*"([^"]+)"', src):
        found.add((m.group(1), normalize(m.group(2))))
    return found


def check_drift(doc):
    server = server_routes()
    if not server:
        FAIL.add(f"no routes found in {SERVER_CC}: has the route table moved?")
        return 0, 0
    documented = set()
    proxy_ops = 0
    for path, method, item, op in operations(doc):
        if path.startswith(PROXY_PREFIXES):
            proxy_ops += 1
            continue
        documented.add((method.upper(), normalize(path)))
    for m, p in sorted(server - documented):
        FAIL.add(f"route {m} {p} is served (server.cc) but not in docs/openapi.yaml")
    for m, p in sorted(documented - server):
        FAIL.add(f"operation {m} {p} is in docs/openapi.yaml but server.cc serves no such route")
    for prefix in PROXY_PREFIXES:
        if not any(p.startswith(prefix) for p in doc["paths"]):
            FAIL.add(f"the proxy routes under {prefix} are not described")
    return len(server), proxy_ops


# ---------------------------------------------------------------------------
# Validation of answers


class Contract:
    def __init__(self, doc):
        self.doc = doc
        self.abs = absolutize_refs(doc)
        self.registry = None
        if Registry is not None:
            self.registry = Registry().with_resource(
                DOC_URI, Resource(contents=self.abs, specification=DRAFT202012))
        self.routes = []  # (regex, template, item)
        for path, item in doc["paths"].items():
            rx = "^"
            for part in re.split(r"(\{[^}]+\})", path):
                if part.startswith("{"):
                    # {path} (the GitHub REST rest) may span segments.
                    rx += "(.+)" if part == "{path}" else "([^/]+)"
                else:
                    rx += re.escape(part)
            self.routes.append((re.compile(rx + "$"), path, resolve(doc, item)))
        self.counts = collections.Counter()
        self.statuses = collections.defaultdict(collections.Counter)

    def validate_value(self, schema, value, where):
        """Validates `value` against `schema` (a schema of the document, its
        local $refs resolved within the document). Returns an error text or None."""
        schema = absolutize_refs(schema)
        if self.registry is not None:
            v = Validator(schema, registry=self.registry, format_checker=FORMATS)
        else:
            resolver = jsonschema.RefResolver(DOC_URI, self.abs, store={DOC_URI: self.abs})
            v = Validator(schema, resolver=resolver, format_checker=FORMATS)
        errors = sorted(v.iter_errors(value), key=lambda e: list(e.absolute_path))
        if errors:
            best = jsonschema.exceptions.best_match(errors)
            path = "/".join(str(p) for p in best.absolute_path)
            msg = f"at /{path}: {best.message}"
            if where is not None:
                FAIL.add(f"{where}: {msg}")
            return msg
        return None

    def select(self, method, path):
        """The operation a request selects: (template, op) or (template, None)
        for a path served with other methods, or (None, None)."""
        for rx, template, item in self.routes:
            if rx.match(path):
                return template, item.get(method.lower())
        return None, None

    @staticmethod
    def pick_media(content, content_type):
        if not content_type:
            return None, None
        ct = content_type.strip().lower()
        base = ct.split(";")[0].strip()
        norm = {k.strip().lower().replace(" ", ""): k for k in content}
        for cand in (ct.replace(" ", ""), base, base.split("/")[0] + "/*", "*/*"):
            if cand in norm:
                return norm[cand], content[norm[cand]]
        return None, None

    # Problem codes that mean the body's shape is wrong: a request schema that
    # accepts such a body is less strict than the server.
    SHAPE_CODES = {"unknown_field", "missing_field", "invalid_type"}

    def check_request(self, method, path, content_type, data, status, answer):
        """The request body against the operation's requestBody schema: an
        accepted body (2xx) must validate; one refused for its shape must not."""
        template, op = self.select(method, path)
        if op is None or "requestBody" not in op:
            return []
        content = resolve(self.doc, op["requestBody"]).get("content", {})
        mt, media = self.pick_media(content, content_type)
        if media is None or "schema" not in media:
            return []
        if mt == "application/x-www-form-urlencoded":
            value = dict(urllib.parse.parse_qsl(data.decode(), keep_blank_values=True))
        elif mt == "application/json":
            try:
                value = json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                return []
        else:
            return []
        err = self.validate_value(media["schema"], value, None)
        code = answer.get("code") if isinstance(answer, dict) else None
        if 200 <= status < 300 and err:
            return [f"the server accepted a request body the {mt} schema refuses: {err}"]
        if status == 400 and code in self.SHAPE_CODES and not err:
            return [f"the server refused the request body ({code}) but the {mt} schema "
                    f"accepts it: {data[:300]!r}"]
        return []

    def check(self, method, path, status, headers, body):
        """Validates one answer. Returns (route label, list of problems)."""
        template, op = self.select(method, path)
        problems = []
        if template is None:
            label = "(listener) no route"
            resp_obj = {"$ref": "#/components/responses/NoRoute"}
            responses = {"404": resp_obj}
        elif op is None:
            label = f"(listener) {method} {template}"
            responses = {"405": {"$ref": "#/components/responses/MethodNotAllowed"}}
        else:
            label = f"{method} {template}"
            responses = op["responses"]
        key = str(status)
        if key not in responses:
            key = key[0] + "XX" if key[0] + "XX" in responses else "default"
        if key not in responses:
            problems.append(f"status {status} is not declared (declared: {sorted(responses)})")
            return label, problems
        resp = resolve(self.doc, responses[key])
        # Headers.
        lower = {k.lower(): v for k, v in headers.items()}
        for hname, h in (resp.get("headers") or {}).items():
            h = resolve(self.doc, h)
            value = lower.get(hname.lower())
            if value is None:
                if h.get("required"):
                    problems.append(f"required header {hname} is missing")
                continue
            if "schema" in h:
                hv = value
                if h["schema"].get("type") == "integer" and re.fullmatch(r"-?\d+", value):
                    hv = int(value)
                err = self.validate_value(h["schema"], hv, None)
                if err:
                    problems.append(f"header {hname}: {value!r}: {err}")
        # Body.
        content = resp.get("content")
        content_type = lower.get("content-type", "")
        if not content:
            if body:
                problems.append(f"a body ({content_type}) where the response declares none")
            return label, problems
        mt, media = self.pick_media(content, content_type)
        if media is None:
            problems.append(
                f"content type {content_type!r} is not declared (declared: {sorted(content)})")
            return label, problems
        if "schema" not in media:
            return label, problems
        base = mt.split(";")[0].strip()
        if base == "application/json" or base.endswith("+json"):
            try:
                value = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                problems.append(f"body is not JSON: {e}")
                return label, problems
        elif base.startswith("text/"):
            value = body.decode("utf-8", errors="replace")
        else:
            return label, problems  # opaque (git pack data, upstream answers)
        err = self.validate_value(media["schema"], value, None)
        if err:
            problems.append(f"body does not match {mt} schema: {err}")
        return label, problems


# ---------------------------------------------------------------------------
# A minimal OIDC issuer for the token exchange (RS256, pure Python)

SMALL_PRIMES = [p for p in range(3, 2000) if all(p % q for q in range(2, int(p ** 0.5) + 1))]


def probable_prime(n, rounds=20):
    for p in SMALL_PRIMES:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for _ in range(rounds):
        x = pow(secrets.randbelow(n - 3) + 2, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def random_prime(bits):
    while True:
        c = secrets.randbits(bits) | (3 << (bits - 2)) | 1
        if probable_prime(c):
            return c


def rsa_keypair(bits=2048):
    e = 65537
    while True:
        p, q = random_prime(bits // 2), random_prime(bits // 2)
        n, phi = p * q, (p - 1) * (q - 1)
        if p != q and n.bit_length() == bits and math.gcd(e, phi) == 1:
            return n, e, pow(e, -1, phi)


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def int_b64u(i):
    return b64u(i.to_bytes((i.bit_length() + 7) // 8, "big"))


class OidcIssuer:
    """Discovery and a JWKS on 127.0.0.1; signs RS256 ID tokens."""

    KID = "ci-rsa-1"

    def __init__(self):
        self.n, self.e, self.d = rsa_keypair()
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": issuer.url, "jwks_uri": issuer.url + "/.well-known/jwks",
                            "id_token_signing_alg_values_supported": ["RS256"],
                            "response_types_supported": ["id_token"],
                            "subject_types_supported": ["public"]}
                elif self.path == "/.well-known/jwks":
                    body = {"keys": [{"kty": "RSA", "kid": OidcIssuer.KID, "use": "sig",
                                      "alg": "RS256", "n": int_b64u(issuer.n),
                                      "e": int_b64u(issuer.e)}]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def sign(self, claims):
        header = {"alg": "RS256", "kid": self.KID, "typ": "JWT"}
        signing_input = (b64u(json.dumps(header).encode()) + "." +
                         b64u(json.dumps(claims).encode())).encode()
        k = (self.n.bit_length() + 7) // 8
        t = bytes.fromhex("3031300d060960864801650304020105000420") + hashlib.sha256(
            signing_input).digest()
        em = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
        sig = pow(int.from_bytes(em, "big"), self.d, self.n).to_bytes(k, "big")
        return signing_input.decode() + "." + b64u(sig)

    def claims(self, audience):
        now = int(time.time())
        return {"iss": self.url, "aud": audience, "sub": "repo:acme/app:ref:refs/heads/main",
                "jti": "gh-" + secrets.token_hex(8), "iat": now, "nbf": now - 60,
                "exp": now + 300, "ref": "refs/heads/main", "repository": "acme/app",
                "repository_id": "456", "repository_owner": "acme", "repository_owner_id": "123",
                "run_id": "9876543", "run_attempt": "1", "event_name": "push"}

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------
# 3. The live broker

AUDIENCE = "jitbroker.openapi-test"


SLACK_SIGNING_SECRET = "openapi-slack-signing-secret"


def slack_signed(payload, secret=SLACK_SIGNING_SECRET, skew=0):
    """A form body and Slack's signature headers for it (docs/api.md)."""
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    ts = str(int(time.time()) + skew)
    sig = "v0=" + hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + body,
                           hashlib.sha256).hexdigest()
    return body, {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig}


def write_config(tmp, issuer_url, policy_version="openapi.1"):
    cfg = f"""\
data_dir: data
server: {{listen: "127.0.0.1:0", threads: 4, max_body_bytes: 65536}}
log: {{level: warn}}
policy:
  version: "{policy_version}"
  tiers:
    merge_deploy: {{control: approval, approvers: ["role:admin"], four_eyes: true}}
  tools:
    - {{match: {{tool: "github.merge_pull_request"}}, tier: merge_deploy}}
    - {{match: {{tool: "shell.exec"}}, tier: destructive}}
  principals:
    - {{id: admin_1, roles: [admin, resource_server], api_key_file: keys/admin.key}}
    - {{id: eng_1, roles: [engineer], api_key_file: keys/eng.key}}
  roles:
    engineer: {{resources: ["jwt://mcp.internal", "jwt://api.internal"], max_tier: merge_deploy, issuers: [internal]}}
    resource_server: {{resources: [], max_tier: read}}
    admin: {{resources: ["*"], max_tier: destructive}}
sessions: {{max_ttl_seconds: 7200, default_ttl_seconds: 3600, heartbeat_seconds: 60, stall_after_missed: 3}}
approvals:
  max_pending_per_session: 2
  # Nothing listens on port 9: posts fail and are retried in the background;
  # the callback route is what this test exercises.
  slack: {{api_url: "http://127.0.0.1:9/api", bot_token: "file:slack-bot-token", channel: C0OPENAPI, signing_secret: "file:slack-signing-secret", users: {{U0ADMIN: admin_1}}}}
limits:
  grants_per_session: {{rate_per_second: 0.001, burst: 12}}
  token_per_address: {{rate_per_second: 0.001, burst: 10}}
  introspect_per_address: {{rate_per_second: 0.001, burst: 8}}
  auth_failures_per_address: {{rate_per_second: 0.001, burst: 12}}
issuers:
  internal: {{type: jwt, algorithm: ES256, audiences: ["mcp.internal", "api.internal"], max_ttl_seconds: 900, scope_tiers: {{read: read, write: write, "mcp:*": read, deploy: write}}}}
trust:
  - name: ci-deploy
    issuer: {issuer_url}
    allow_http: true
    provider: github_actions
    audience: {AUDIENCE}
    claims: {{repository_owner_id: "123", repository_id: "456", ref: refs/heads/main}}
    grant: {{issuer: internal, resource: "jwt://api.internal", scopes: [deploy], ttl_seconds: 300, max_tier: write}}
"""
    path = os.path.join(tmp, "broker.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(cfg)
    with open(os.path.join(tmp, "slack-bot-token"), "w", encoding="utf-8") as f:
        f.write("xoxb-openapi-test\n")
    with open(os.path.join(tmp, "slack-signing-secret"), "w", encoding="utf-8") as f:
        f.write(SLACK_SIGNING_SECRET + "\n")
    return path


class Broker:
    def __init__(self, binary, config, tmp):
        self.binary, self.config, self.tmp = binary, config, tmp
        self.proc = None
        self.port = None
        self.stderr_path = os.path.join(tmp, "broker.stderr")

    def start(self):
        # The binary may be relinked under us (missing, busy, or cut short for
        # a moment): try again a few times before giving up.
        for attempt in range(3):
            try:
                return self.start_once()
            except RuntimeError as e:
                if attempt == 2 or self.proc is None or self.proc.poll() is None:
                    raise
                print(f"the broker exited at start ({e}); trying again", flush=True)
                self.stop()
                time.sleep(2)

    def start_once(self):
        deadline = time.monotonic() + 60
        while True:
            try:
                self.stderr = open(self.stderr_path, "ab")
                self.proc = subprocess.Popen([self.binary, "--config", self.config],
                                             stdout=subprocess.PIPE, stderr=self.stderr,
                                             stdin=subprocess.DEVNULL, cwd=self.tmp)
                break
            except OSError as e:  # ENOENT, ETXTBSY while it is being relinked
                self.stderr.close()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cannot run {self.binary}: {e}")
                print(f"waiting for {self.binary} ({e.strerror})", flush=True)
                time.sleep(1)
        lines = queue.Queue()
        proc = self.proc

        def drain():  # also keeps the broker from blocking on a full pipe
            for line in iter(proc.stdout.readline, b""):
                lines.put(line.decode(errors="replace"))
            lines.put(None)

        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:  # stdout closed: the broker exited
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
                break
            m = re.search(r"listening on port (\d+)", line)
            if m:
                self.port = int(m.group(1))
                return
        raise RuntimeError("the broker did not start:\n" + self.stderr_text())

    def stderr_text(self):
        try:
            with open(self.stderr_path, encoding="utf-8", errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()
        self.proc = None


class Client:
    """urllib over loopback (no proxies); validates every answer."""

    def __init__(self, port, contract):
        self.base = f"http://127.0.0.1:{port}"
        self.contract = contract
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.calls = 0

    def call(self, method, path, *, token=None, body=None, raw=None, content_type=None,
             headers=None, expect=None, auth=None):
        """body: a JSON value; raw: bytes. expect: the status (or statuses) the
        scenario expects. Returns (status, parsed JSON or None, headers)."""
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Bearer " + token
        if auth is not None:
            h["Authorization"] = auth
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", content_type or "application/json")
        elif raw is not None:
            data = raw
            h.setdefault("Content-Type", content_type or "application/octet-stream")
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with self.opener.open(req, timeout=15) as resp:
                status, rh, rb = resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as e:
            status, rh, rb = e.code, dict(e.headers.items()), e.read()
        self.calls += 1
        route_path = urllib.parse.urlsplit(path).path
        label, problems = self.contract.check(method, route_path, status, rh, rb)
        shown = rb[:1500].decode("utf-8", errors="replace")
        parsed = None
        try:
            parsed = json.loads(rb.decode("utf-8")) if rb else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            pass
        if expect is not None:
            allowed = {expect} if isinstance(expect, int) else set(expect)
            if status not in allowed:
                problems.append(f"the scenario expected {sorted(allowed)}")
        if data:
            problems += self.contract.check_request(method, route_path, h.get("Content-Type"),
                                                    data, status, parsed)
        if problems:
            for p in problems:
                FAIL.add(f"{method} {path} [{label}] -> {status}: {p}\n    body: {shown}")
        else:
            self.contract.counts[label] += 1
            self.contract.statuses[label][status] += 1
        return status, parsed, rh

    def form(self, method, path, fields, **kw):
        raw = urllib.parse.urlencode(fields).encode()
        kw.setdefault("content_type", "application/x-www-form-urlencoded")
        return self.call(method, path, raw=raw, **kw)


def scenario(c, keys, idp, config_path):
    A, E = keys["admin"], keys["eng"]
    J = "application/json"

    # ---- anonymous routes and the listener
    c.call("GET", "/healthz", expect=200)
    c.call("GET", "/readyz", expect=200)
    c.call("GET", "/metrics", expect=200)
    c.call("GET", "/.well-known/jwks.json", expect=200)
    c.call("GET", "/v1/audit/verify", token=A, expect=200)  # a fresh chain
    c.call("GET", "/v1/no-such-route", expect=404)
    c.call("PUT", "/v1/sessions", token=E, expect=405)
    c.call("GET", "/v1/token", expect=405)
    c.call("GET", "/v1/grants/grt_x", token=A, raw=b"stray", content_type=J, expect=413)

    # ---- authentication (3 failures of the 12 allowed)
    c.call("GET", "/v1/sessions", expect=401)
    c.call("GET", "/v1/sessions", auth="Basic Zm9vOmJhcg==", expect=401)
    c.call("GET", "/v1/sessions", token="jbk_" + "x" * 40, expect=401)

    # ---- sessions
    scope = {"resources": ["jwt://mcp.internal", "jwt://api.internal"],
             "max_tier": "merge_deploy", "issuers": ["internal"]}
    st, s1, _ = c.call("POST", "/v1/sessions", token=E, expect=201, body={
        "agent": {"id": "agent_a"}, "task": {"id": "task_1", "description": "fix it",
                                             "scope": scope},
        "ttl_seconds": 99999, "heartbeat_seconds": 60})
    sid1, tok1 = s1["session_id"], s1["session_token"]
    st, s2, _ = c.call("POST", "/v1/sessions", token=A, expect=201, body={
        "agent": {"id": "agent_b"}, "task": {"id": "task_2", "scope": {
            "resources": ["jwt://api.internal"], "max_tier": "merge_deploy",
            "scopes": ["read", "deploy"]}}})
    sid2, tok2 = s2["session_id"], s2["session_token"]
    c.call("POST", "/v1/sessions", token=E, expect=400, body={
        "agent": {"id": "a"}, "task": {"id": "t", "scope": scope}, "bogus": 1})
    c.call("POST", "/v1/sessions", token=E, expect=400, body={
        "agent": {"id": "a"}, "task": {"id": "t", "scope": {"resources": ["jwt://x"], "x": 1}}})
    c.call("POST", "/v1/sessions", token=E, expect=400, body={"agent": {"id": "a"}})
    c.call("POST", "/v1/sessions", token=E, expect=400, body={
        "agent": {"id": 7}, "task": {"id": "t", "scope": scope}})
    c.call("POST", "/v1/sessions", token=E, expect=400, raw=b'{"agent": ', content_type=J)
    c.call("POST", "/v1/sessions", token=E, expect=400, content_type=J,
           raw=b'{"agent":{"id":"a"},"agent":{"id":"b"}}')
    c.call("POST", "/v1/sessions", token=E, expect=415, raw=b"{}", content_type="text/plain")
    c.call("POST", "/v1/sessions", token=tok1, expect=403, body={
        "agent": {"id": "a"}, "task": {"id": "t", "scope": scope}})
    c.call("POST", "/v1/sessions", token=E, expect=403, body={
        "agent": {"id": "a"}, "task": {"id": "t", "scope": {"resources": ["jwt://elsewhere"]}}})

    c.call("GET", "/v1/sessions", token=E, expect=200)
    c.call("GET", "/v1/sessions?state=active&limit=5", token=A, expect=200)
    c.call("GET", "/v1/sessions?principal=eng_1&agent=agent_a", token=A, expect=200)
    c.call("GET", "/v1/sessions?state=bogus", token=A, expect=400)
    c.call("GET", "/v1/sessions?limit=0", token=A, expect=400)
    c.call("GET", "/v1/sessions?limit=1&limit=2", token=A, expect=400)
    c.call("GET", "/v1/sessions", token=tok1, expect=403)
    c.call("GET", "/v1/sessions?principal=admin_1", token=E, expect=403)

    c.call("GET", f"/v1/sessions/{sid1}", token=E, expect=200)
    c.call("GET", f"/v1/sessions/{sid1}", token=tok1, expect=200)
    c.call("GET", f"/v1/sessions/{sid1}", token=A, expect=200)
    c.call("GET", f"/v1/sessions/{sid1}", token=tok2, expect=403)
    c.call("GET", f"/v1/sessions/{sid2}", token=E, expect=404)
    c.call("GET", "/v1/sessions/ses_doesnotexist", token=A, expect=404)
    c.call("GET", "/v1/sessions/not-an-id!", token=A, expect=404)

    c.call("POST", f"/v1/sessions/{sid1}/heartbeat", token=tok1, body={"progress": "halfway"},
           expect=200)
    c.call("POST", f"/v1/sessions/{sid1}/heartbeat", token=tok1, expect=200)  # no body
    c.call("POST", f"/v1/sessions/{sid1}/heartbeat", token=tok1, body={"percent": 50}, expect=400)
    c.call("POST", f"/v1/sessions/{sid1}/heartbeat", token=tok1,
           body={"progress": "a\u202eb"}, expect=400)
    c.call("POST", f"/v1/sessions/{sid1}/heartbeat", token=E, body={}, expect=403)

    # ---- grants
    read = {"tool": "mcp.search", "operation": "read", "resource": "jwt://mcp.internal",
            "issuer": "internal", "scope": {"audience": "mcp.internal"}, "ttl_seconds": 300,
            "parameters": {"q": "checkout", "api_key": "hunter2"}, "justification": "search"}
    grants = f"/v1/sessions/{sid1}/grants"
    st, g1, _ = c.call("POST", grants, token=tok1, body=read, expect=201)
    c.call("POST", grants, token=tok1, expect=201, body={
        "tool": "mcp.search", "operation": "read", "resource": "jwt://mcp.internal",
        "issuer": "internal", "scope": {"scopes": ["mcp:search"]}})
    merge = {"tool": "github.merge_pull_request", "operation": "merge",
             "resource": "jwt://api.internal", "issuer": "internal",
             "parameters": {"pull": 842}, "justification": "release"}
    st, p1, _ = c.call("POST", grants, token=tok1, body=merge, expect=202)
    st, p2, _ = c.call("POST", grants, token=tok1, body=dict(merge, parameters={"pull": 843}),
                       expect=202)
    c.call("POST", grants, token=tok1, body=dict(merge, parameters={"pull": 844}), expect=429)
    c.call("POST", grants, token=tok1, expect=403, body={
        "tool": "shell.exec", "operation": "exec", "resource": "jwt://api.internal",
        "issuer": "internal", "parameters": {"command": "rm -rf /"}})
    c.call("POST", f"/v1/sessions/{sid2}/grants", token=tok2, expect=403, body=read)
    c.call("POST", grants, token=tok1, expect=400, body={
        "tool": "mcp.search", "operation": "read", "resource": "jwt://other.internal",
        "issuer": "internal"})
    c.call("POST", grants, token=E, body=read, expect=403)
    c.call("POST", grants, token=tok2, body=read, expect=403)
    c.call("POST", grants, token=tok1, body=dict(read, issuer="nope"), expect=400)
    c.call("POST", grants, token=tok1, body=dict(read, scope={"scopes": ["nope"]}), expect=400)
    c.call("POST", grants, token=tok1, body={"operation": "read"}, expect=400)
    c.call("POST", grants, token=tok1, body=dict(read, ttl_seconds="300"), expect=400)
    c.call("POST", grants, token=tok1, body=dict(read, tool="mcp search"), expect=400)
    c.call("POST", grants, token=tok1, body=dict(read, justification="x\u200by"), expect=400)
    c.call("POST", "/v1/sessions/ses_doesnotexist/grants", token=tok1, body=read, expect=(403, 404))

    # A session budget (api.md, "Session budgets"): the answer that crosses it,
    # the session's use, and a malformed budget.
    st, s3, _ = c.call("POST", "/v1/sessions", token=E, expect=201, body={
        "agent": {"id": "agent_c"}, "task": {"id": "task_3", "scope": scope},
        "budget": {"max_grants": 1, "max_grants_per_tier": {"read": 1},
                   "max_credential_seconds": 600}})
    budgeted = f"/v1/sessions/{s3['session_id']}/grants"
    c.call("POST", budgeted, token=s3["session_token"], body=read, expect=201)
    c.call("POST", budgeted, token=s3["session_token"], body=read, expect=403)
    c.call("GET", f"/v1/sessions/{s3['session_id']}", token=E, expect=200)
    c.call("POST", "/v1/sessions", token=E, expect=400, body={
        "agent": {"id": "a"}, "task": {"id": "t", "scope": scope}, "budget": {"max_grants": 0}})

    gid1, pid1, pid2 = g1["grant_id"], p1["grant_id"], p2["grant_id"]
    c.call("GET", f"/v1/grants/{gid1}", token=tok1, expect=200)
    c.call("GET", f"/v1/grants/{gid1}", token=E, expect=200)
    c.call("GET", f"/v1/grants/{gid1}", token=A, expect=200)
    c.call("GET", f"/v1/grants/{pid1}?wait=1", token=tok1, expect=200)
    c.call("GET", f"/v1/grants/{gid1}?wait=61", token=tok1, expect=400)
    c.call("GET", f"/v1/grants/{gid1}", token=tok2, expect=(403, 404))
    c.call("GET", "/v1/grants/grt_doesnotexist", token=A, expect=404)

    # ---- approvals
    c.call("GET", "/v1/approvals", token=A, expect=200)
    st, page, _ = c.call("GET", "/v1/approvals?limit=1&order=newest", token=A, expect=200)
    if page and page.get("next_cursor"):
        cur = urllib.parse.quote(page["next_cursor"])
        c.call("GET", f"/v1/approvals?limit=1&order=newest&cursor={cur}", token=A, expect=200)
        c.call("GET", f"/v1/approvals?limit=1&cursor={cur}", token=A, expect=400)
    else:
        FAIL.add("GET /v1/approvals?limit=1 of two pending approvals gave no next_cursor")
    c.call("GET", f"/v1/approvals?state=pending&session_id={sid1}&principal=eng_1"
                  "&tier=merge_deploy", token=A, expect=200)
    c.call("GET", "/v1/approvals?state=denied", token=A, expect=400)
    c.call("GET", "/v1/approvals?tier=nope", token=A, expect=400)
    c.call("GET", "/v1/approvals?limit=201", token=A, expect=400)
    c.call("GET", "/v1/approvals?cursor=zzz", token=A, expect=400)
    c.call("GET", "/v1/approvals", token=E, expect=(200, 403))
    c.call("GET", "/v1/approvals", token=tok1, expect=403)

    aid1, aid2 = p1["approval"]["id"], p2["approval"]["id"]
    digest1, digest2 = p1["approval"]["request_digest"], p2["approval"]["request_digest"]
    c.call("GET", f"/v1/approvals/{aid1}", token=A, expect=200)
    c.call("GET", f"/v1/approvals/{aid1}", token=E, expect=200)
    c.call("GET", f"/v1/approvals/{aid1}", token=tok1, expect=403)
    c.call("GET", "/v1/approvals/apr_doesnotexist", token=A, expect=404)
    decide = f"/v1/approvals/{aid1}"
    c.call("POST", decide, token=E, body={"decision": "approve", "request_digest": digest1},
           expect=403)
    c.call("POST", decide, token=tok1, body={"decision": "approve", "request_digest": digest1},
           expect=403)
    c.call("POST", decide, token=A, body={"decision": "approve", "request_digest": "0" * 64},
           expect=409)
    c.call("POST", decide, token=A, body={"decision": "maybe", "request_digest": digest1},
           expect=400)
    c.call("POST", decide, token=A, body={"decision": "approve"}, expect=400)
    c.call("POST", decide, token=A, expect=400, body={
        "decision": "approve", "request_digest": digest1, "note": "x"})
    c.call("POST", "/v1/approvals/apr_doesnotexist", token=A, expect=404,
           body={"decision": "approve", "request_digest": digest1})
    c.call("POST", decide, token=A, expect=200, body={
        "decision": "approve", "request_digest": digest1, "comment": "ship it"})
    c.call("POST", decide, token=A, body={"decision": "deny", "request_digest": digest1},
           expect=409)
    c.call("POST", f"/v1/approvals/{aid2}", token=A, expect=200,
           body={"decision": "deny", "request_digest": digest2, "comment": "not now"})
    c.call("GET", f"/v1/approvals/{aid1}", token=A, expect=200)
    c.call("GET", f"/v1/grants/{pid1}", token=E, expect=200)      # approved, not collected
    c.call("GET", f"/v1/grants/{pid1}", token=tok1, expect=200)   # collected: the credential
    c.call("GET", f"/v1/grants/{pid1}", token=tok1, expect=200)   # active, no credential
    c.call("GET", f"/v1/grants/{pid2}", token=tok1, expect=200)   # denied
    # Four-eyes: the admin's own agent's request.
    st, p3, _ = c.call("POST", f"/v1/sessions/{sid2}/grants", token=tok2, expect=202, body={
        "tool": "github.merge_pull_request", "operation": "merge",
        "resource": "jwt://api.internal", "issuer": "internal"})
    c.call("POST", f"/v1/approvals/{p3['approval']['id']}", token=A, expect=403,
           body={"decision": "approve", "request_digest": p3["approval"]["request_digest"]})

    # ---- introspection (8 allowed per address)
    jwt_token = g1["credential"]["token"]
    c.form("POST", "/v1/introspect", {"token": jwt_token}, token=A, expect=200)
    c.form("POST", "/v1/introspect?token=x", {"token": jwt_token}, token=A, expect=400)
    c.form("POST", "/v1/introspect", {"other": "x"}, token=A, expect=400)
    c.call("POST", "/v1/introspect", token=A, body={"token": jwt_token}, expect=415)
    c.form("POST", "/v1/introspect", {"token": jwt_token}, token=E, expect=403)
    c.form("POST", "/v1/introspect", {"token": jwt_token}, expect=401)

    # ---- revocation of one grant
    c.call("DELETE", f"/v1/grants/{gid1}", token=tok1, expect=200)
    c.call("DELETE", f"/v1/grants/{gid1}", token=tok1, expect=409)
    c.call("DELETE", f"/v1/grants/{pid1}", token=A, expect=200)
    c.call("DELETE", "/v1/grants/grt_doesnotexist", token=A, expect=404)
    c.form("POST", "/v1/introspect", {"token": jwt_token}, token=A, expect=200)  # inactive
    for _ in range(10):
        st, _, _ = c.form("POST", "/v1/introspect", {"token": jwt_token}, token=A,
                          expect=(200, 429))
        if st == 429:
            break
    else:
        FAIL.add("introspection never answered 429 past limits.introspect_per_address")

    # ---- ending sessions
    c.call("POST", f"/v1/sessions/{sid1}/complete", token=tok1, body={"reason": "done"},
           expect=200)
    c.call("POST", f"/v1/sessions/{sid1}/complete", token=tok1, expect=409)
    c.call("POST", f"/v1/sessions/{sid1}/heartbeat", token=tok1, expect=409)
    c.call("POST", grants, token=tok1, body=read, expect=409)
    c.call("POST", f"/v1/sessions/{sid1}/revoke", token=A, body={"reason": "x"}, expect=409)
    c.call("GET", f"/v1/sessions/{sid1}", token=E, expect=200)
    c.call("POST", f"/v1/sessions/{sid2}/revoke", token=tok2, body={"reason": "x"}, expect=403)
    c.call("POST", f"/v1/sessions/{sid2}/revoke", token=A, body={"reason": "rotating"},
           expect=200)
    c.call("POST", f"/v1/sessions/{sid2}/complete", token=A, body={"why": "x"}, expect=400)
    c.call("GET", f"/v1/approvals/{p3['approval']['id']}", token=A, expect=200)
    st, s3, _ = c.call("POST", "/v1/sessions", token=E, expect=201, body={
        "agent": {"id": "agent_c"}, "task": {"id": "task_3", "scope": scope}})
    c.call("POST", f"/v1/sessions/{s3['session_id']}/grants", token=s3["session_token"],
           body=read, expect=201)
    c.call("POST", f"/v1/sessions/{s3['session_id']}/complete", token=E, expect=200)

    # ---- bulk revocation
    st, s4, _ = c.call("POST", "/v1/sessions", token=E, expect=201, body={
        "agent": {"id": "agent_d"}, "task": {"id": "task_4", "scope": scope}})
    c.call("POST", f"/v1/sessions/{s4['session_id']}/grants", token=s4["session_token"],
           body=read, expect=201)
    c.call("POST", "/v1/admin/revoke", token=A, expect=200,
           body={"principal": "eng_1", "reason": "offboarding"})
    c.call("POST", "/v1/admin/revoke", token=A, expect=200,
           body={"agent": "agent_d", "reason": "again"})
    c.call("POST", "/v1/admin/revoke", token=A, expect=200,
           body={"issuer": "internal", "reason": "key rotation"})
    c.call("POST", "/v1/admin/revoke", token=A, expect=200, body={"all": True, "reason": "all"})
    c.call("POST", "/v1/admin/revoke", token=A, expect=400, body={"reason": "no selector"})
    c.call("POST", "/v1/admin/revoke", token=A, expect=400,
           body={"principal": "eng_1", "agent": "a", "reason": "two"})
    c.call("POST", "/v1/admin/revoke", token=A, expect=400, body={"principal": "eng_1"})
    c.call("POST", "/v1/admin/revoke", token=E, expect=403,
           body={"principal": "eng_1", "reason": "x"})

    # ---- the grant rate limit (12 per session)
    st, s5, _ = c.call("POST", "/v1/sessions", token=E, expect=201, body={
        "agent": {"id": "agent_e"}, "task": {"id": "task_5", "scope": scope}})
    for _ in range(14):
        st, _, _ = c.call("POST", f"/v1/sessions/{s5['session_id']}/grants",
                          token=s5["session_token"], body=read, expect=(201, 429))
        if st == 429:
            break
    else:
        FAIL.add("grant requests never answered 429 past limits.grants_per_session")

    # ---- token exchange (10 per address)
    tok_path = "/v1/token"
    exchange = {"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
                "audience": "ci-deploy", "scope": "deploy"}
    subject = idp.sign(idp.claims(AUDIENCE))
    c.form("POST", tok_path, dict(exchange, subject_token=subject), expect=200)
    c.form("POST", tok_path, dict(exchange, subject_token=subject), expect=400)  # replayed
    c.form("POST", tok_path, dict(exchange, subject_token=subject[:-4] + "AAAA"), expect=400)
    c.form("POST", tok_path, dict(exchange, grant_type="password", subject_token=subject),
           expect=400)
    c.form("POST", tok_path + "?audience=ci-deploy", dict(exchange, subject_token="x.y.z"),
           expect=400)
    c.call("POST", tok_path, body=dict(exchange, subject_token=subject), expect=400)
    c.form("POST", tok_path, dict(exchange, subject_token=idp.sign(idp.claims(AUDIENCE)),
                                  audience="nope"), expect=400)
    c.call("GET", "/v1/sessions?principal=trust:ci-deploy", token=A, expect=200)
    for _ in range(10):
        st, _, _ = c.form("POST", tok_path, dict(exchange, subject_token="a.b.c"),
                          expect=(400, 429))
        if st == 429:
            break
    else:
        FAIL.add("the token endpoint never answered 429 past limits.token_per_address")

    # ---- audit
    c.call("GET", "/v1/audit", token=A, expect=200)
    c.call("GET", f"/v1/audit?session_id={sid1}&after_seq=1&limit=5", token=A, expect=200)
    c.call("GET", "/v1/audit?principal=eng_1&chain=main", token=A, expect=200)
    c.call("GET", "/v1/audit?limit=0", token=A, expect=400)
    c.call("GET", "/v1/audit", token=E, expect=403)
    c.call("GET", "/v1/audit/keys", token=A, expect=200)
    c.call("GET", "/v1/audit/keys", token=E, expect=403)
    c.call("GET", "/v1/audit/verify", token=A, expect=200)
    c.call("GET", "/v1/audit/verify", token=tok2, expect=403)

    # ---- reload
    c.call("POST", "/v1/admin/reload", token=A, expect=200)
    c.call("POST", "/v1/admin/reload", token=A, body={}, expect=200)
    c.call("POST", "/v1/admin/reload", token=A, raw=b"{", content_type=J, expect=400)
    # A field a client believes does something is refused, as on every route.
    c.call("POST", "/v1/admin/reload", token=A, body={"force": True}, expect=400)
    c.call("POST", "/v1/admin/reload", token=A, body=[1, 2], expect=400)
    c.call("POST", "/v1/admin/reload", token=E, expect=403)
    with open(config_path, encoding="utf-8") as f:
        good = f.read()
    with open(config_path, "w", encoding="utf-8") as f:
        f.write(good.replace('version: "openapi.1"', 'version: ""'))
    c.call("POST", "/v1/admin/reload", token=A, expect=(400, 409))
    with open(config_path, "w", encoding="utf-8") as f:
        f.write(good)
    c.call("POST", "/v1/admin/reload", token=A, expect=200)
    c.call("GET", "/metrics", token=A, expect=200)

    # ---- the proxies: no github_app issuer declares a host, so no route
    c.call("GET", "/git/github.com/acme/app.git/info/refs?service=git-upload-pack",
           expect=404)
    c.call("POST", "/git/github.com/acme/app.git/git-receive-pack", raw=b"0000",
           content_type="application/x-git-receive-pack-request", expect=404)
    c.call("GET", "/github/api.github.com/repos/acme/app/pulls/1", token=tok2, expect=404)

    # ---- Slack callbacks (approvals.slack): signed, else 401 before parsing
    F = "application/x-www-form-urlencoded"
    click = {"type": "block_actions", "user": {"id": "U0ADMIN"},
             "container": {"type": "message", "channel_id": "C0OPENAPI", "message_ts": "1.2"},
             "message": {"ts": "1.2", "blocks": []},
             "actions": [{"action_id": "jitbroker_approve", "value": "apr_none:" + "0" * 64}]}
    raw, sh = slack_signed(click)
    c.call("POST", "/v1/slack/interactions", raw=raw, content_type=F, headers=sh, expect=200)
    raw, sh = slack_signed({"type": "view_submission"})
    c.call("POST", "/v1/slack/interactions", raw=raw, content_type=F, headers=sh, expect=200)
    raw, sh = slack_signed([1])
    c.call("POST", "/v1/slack/interactions", raw=raw, content_type=F, headers=sh, expect=400)
    c.call("POST", "/v1/slack/interactions", raw=raw, content_type="text/plain", headers=sh,
           expect=415)
    c.call("POST", "/v1/slack/interactions", raw=raw, content_type=F, expect=401)
    raw, sh = slack_signed(click, secret="not-the-secret")
    c.call("POST", "/v1/slack/interactions", raw=raw, content_type=F, headers=sh, expect=401)
    raw, sh = slack_signed(click, skew=-600)
    c.call("POST", "/v1/slack/interactions", raw=raw, content_type=F, headers=sh, expect=401)
    c.call("POST", "/v1/slack/interactions", raw=b"payload=" + b"x" * 70000, content_type=F,
           expect=413)

    # ---- failed authentications exhaust the address's bucket: 429 for all
    for _ in range(15):
        st, _, _ = c.call("GET", "/v1/sessions", token="jbk_" + "y" * 40, expect=(401, 429))
        if st == 429:
            break
    else:
        FAIL.add("failed authentications never answered 429 (limits.auth_failures_per_address)")
    c.call("GET", "/v1/audit", token=A, expect=429)


def live(binary, contract):
    tmp = tempfile.mkdtemp(prefix="jitbroker-openapi-")
    broker = None
    idp = None
    try:
        os.makedirs(os.path.join(tmp, "keys"))
        keys = {}
        for name in ("admin", "eng"):
            keys[name] = "jbk_" + secrets.token_urlsafe(30).replace("-", "a").replace("_", "b")
            with open(os.path.join(tmp, "keys", name + ".key"), "w", encoding="utf-8") as f:
                f.write(keys[name] + "\n")
        idp = OidcIssuer()
        config = write_config(tmp, idp.url)
        broker = Broker(binary, config, tmp)
        try:
            broker.start()
        except RuntimeError as e:
            FAIL.add(str(e))
            return 0
        client = Client(broker.port, contract)
        try:
            scenario(client, keys, idp, config)
        except Exception as e:  # a broken step: report it, keep the summary
            FAIL.add(f"the scenario stopped: {e!r}\n{traceback.format_exc()}")
        if broker.proc.poll() is not None:
            FAIL.add(f"the broker exited ({broker.proc.returncode}):\n{broker.stderr_text()}")
        return client.calls
    finally:
        if broker is not None:
            broker.stop()
        if idp is not None:
            idp.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv):
    if len(argv) != 2:
        print(__doc__)
        return 2
    binary = os.path.abspath(argv[1])
    start = time.monotonic()
    # SIGTERM (a test runner's timeout) unwinds like an exception, so that the
    # broker is stopped and the temporary directory removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with open(DOC_PATH, encoding="utf-8") as f:
        doc = yaml.safe_load(f)

    print("== 1. document")
    n_schemas = check_document(doc)
    if FAIL.items:
        print(f"FAILED: {len(FAIL.items)} problem(s) in the document")
        return 1
    contract = Contract(doc)
    n_examples = check_examples(doc, contract)
    n_ops = sum(1 for _ in operations(doc))
    print(f"{len(doc['paths'])} paths, {n_ops} operations, {n_schemas} schemas checked against "
          f"the 2020-12 meta-schema, {n_examples} examples validated")

    print("== 2. route table (broker/http/server.cc)")
    before = len(FAIL.items)
    n_routes, n_proxy = check_drift(doc)
    if len(FAIL.items) == before:
        print(f"{n_routes} routes in server.cc, each documented, nothing else; "
              f"plus {n_proxy} proxy operations")

    print(f"== 3. live broker ({binary})")
    calls = live(binary, contract)
    width = max((len(k) for k in contract.counts), default=10)
    for label in sorted(contract.counts, key=lambda k: (k.startswith("("), k.split(" ", 1)[-1], k)):
        by_status = " ".join(f"{st}x{n}" for st, n in sorted(contract.statuses[label].items()))
        print(f"  {label:<{width}}  {contract.counts[label]:3d} validated  ({by_status})")
    covered = {k for k in contract.counts if not k.startswith("(")}
    missing = [f"{m.upper()} {p}" for p, m, _, _ in operations(doc)
               if f"{m.upper()} {p}" not in covered and not p.startswith(PROXY_PREFIXES)]
    for m in missing:
        FAIL.add(f"operation {m}: no answer of it was validated")
    total = sum(contract.counts.values())
    print(f"{calls} requests, {total} responses validated, "
          f"{len(covered)} operations covered, {time.monotonic() - start:.1f} s")
    if FAIL.items:
        print(f"FAILED: {len(FAIL.items)} problem(s)")
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
