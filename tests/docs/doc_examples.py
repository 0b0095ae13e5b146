#!/usr/bin/env python3
"""Runs the shell examples of README.md and docs/jitctl.md against a daemon.

The examples are the documentation a user copies; this keeps them from
drifting. See docs/testing.md ("Executable documentation") for the rules a
```sh block follows. In short:

- Every ```sh block of a file runs, in order, in one bash session per file
  (variables carry from block to block), against one jitbroker started on
  conf/dev.yaml exactly as scripts/run-dev.sh starts it, in a scratch copy
  of the repository's layout (conf/, data/, build -> the build directory).
  Only the listen port differs: `127.0.0.1:8443` and `localhost:8443` in the
  examples are rewritten to the scratch daemon's port.
- A block preceded by `<!-- doc-test: skip: REASON -->` is not run; the
  reason is printed (it must name what the block needs and which test covers
  it instead).
- In a block whose commands start with `$ `, the other lines are the output
  the command before them must print, in order (`…` matches anything).
- Otherwise a command's `# -> …` comment (and the indented `#   ` lines that
  continue it)
  is what it must do: `exit N` names the exit code; else `denied` means 4,
  `pending` means 3, anything else 0; every `quoted` word in it (a stable
  code, a field name) must appear in the command's output.
- A command ending in `&` runs in the background; it is waited for, and
  checked, when the file's last block has run.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

SKIP = re.compile(r"<!--\s*doc-test:\s*skip:\s*(.+?)\s*-->")
QUOTED = re.compile(r"`([^`]+)`")


def shell_scan(text):
    """Reads text as bash quotes it: (quote left open at the end or None,
    index of the first `#` comment outside quotes or None)."""
    quote, comment = None, None
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "\\":
            i += 2
            continue
        elif c == "#" and (i == 0 or text[i - 1] in " \t\n"):
            if comment is None:
                comment = i
            while i < len(text) and text[i] != "\n":
                i += 1
        i += 1
    return quote, comment


def logical_lines(lines):
    """Joins backslash continuations and quoted newlines; yields (index, text)."""
    out, buf, start = [], [], None
    for i, line in enumerate(lines):
        if start is None:
            start = i
        buf.append(line)
        if line.rstrip().endswith("\\") or shell_scan("\n".join(buf))[0]:
            continue
        out.append((start, "\n".join(buf)))
        buf, start = [], None
    if buf:
        out.append((start, "\n".join(buf)))
    return out


def strip_comment(cmd):
    """Splits `cmd  # comment` outside quotes; returns (command, comment)."""
    at = shell_scan(cmd)[1]
    if at is None:
        return cmd.rstrip(), ""
    return cmd[:at].rstrip(), cmd[at + 1:].strip()


def expectation(text):
    m = re.search(r"\bexit (\d+)\b", text)
    if m:
        rc = int(m.group(1))
    elif re.search(r"\bdenied\b", text):
        rc = 4
    elif re.search(r"\bpending\b", text):
        rc = 3
    else:
        rc = 0
    words = QUOTED.findall(text)
    return rc, words


def parse_blocks(path):
    """Yields dicts: {line, skip, commands: [{line, cmd, rc, words, output, bg}]}."""
    lines = open(path, encoding="utf-8").read().split("\n")
    blocks = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```sh":
            skip = None
            for back in (1, 2):
                if i - back >= 0:
                    m = SKIP.search(lines[i - back])
                    if m:
                        skip = m.group(1)
            j = i + 1
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            body = lines[i + 1:j]
            blocks.append({"line": i + 1, "skip": skip,
                           "commands": parse_commands(body, i + 2)})
            i = j + 1
        else:
            i += 1
    return blocks


def parse_commands(body, first_line):
    prompt = any(l.startswith("$ ") for l in body)
    cmds = []
    if prompt:
        current = None
        cont = False
        for k, l in enumerate(body):
            if l.startswith("$ ") or cont:
                text = l[2:] if l.startswith("$ ") and not cont else l.strip()
                if current is None or not cont:
                    current = {"line": first_line + k, "cmd": text, "rc": 0,
                               "words": [], "output": [], "bg": False}
                    cmds.append(current)
                else:
                    current["cmd"] += "\n" + text
                cont = l.rstrip().endswith("\\")
            elif current is not None and l.strip():
                current["output"].append(l.strip())
        for c in cmds:
            c["cmd"], comment = strip_comment(c["cmd"])
            if "->" in comment:
                c["rc"], c["words"] = expectation(comment.split("->", 1)[1])
        return cmds
    for start, text in logical_lines(body):
        stripped = text.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            note = stripped.lstrip("#").strip()
            continued = cmds and cmds[-1].get("open") and re.match(r"#\s{2,}", stripped)
            if cmds and (note.startswith("->") or continued):
                c = cmds[-1]
                c["expect"] = (c.get("expect", "") + " " +
                               note.split("->", 1)[-1]).strip()
                c["open"] = True
            else:
                if cmds:
                    cmds[-1]["open"] = False
            continue
        cmd, comment = strip_comment(text)
        c = {"line": first_line + start, "cmd": cmd, "output": [],
             "bg": cmd.endswith("&") and not cmd.endswith("&&"),
             "open": "->" in comment}
        if "->" in comment:
            c["expect"] = comment.split("->", 1)[1].strip()
        cmds.append(c)
    for c in cmds:
        c["rc"], c["words"] = expectation(c.get("expect", ""))
        c.pop("open", None)
    return cmds


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_daemon(src, build, scratch):
    os.makedirs(os.path.join(scratch, "conf"))
    port = free_port()
    conf = open(os.path.join(src, "conf", "dev.yaml"), encoding="utf-8").read()
    if "127.0.0.1:8443" not in conf:
        sys.exit("conf/dev.yaml no longer listens on 127.0.0.1:8443; update this runner")
    conf = conf.replace("127.0.0.1:8443", f"127.0.0.1:{port}")
    open(os.path.join(scratch, "conf", "dev.yaml"), "w", encoding="utf-8").write(conf)
    os.symlink(build, os.path.join(scratch, "build"))
    log = open(os.path.join(scratch, "daemon.log"), "wb")
    proc = subprocess.Popen([os.path.join(build, "jitbroker"), "--config", "conf/dev.yaml"],
                            cwd=scratch, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    sys.stderr.write(open(os.path.join(scratch, "daemon.log"), encoding="utf-8",
                          errors="replace").read())
    sys.exit("the daemon did not become healthy")


CHECK = r'''
__doc_check() {  # id rc
  python3 "$__DOC_RUNNER" --check "$__DOC_DIR" "$1" "$2" || {
    __doc_failed=1; kill $(jobs -p) 2>/dev/null; exit 1; }
}
'''


def script_for(path, blocks, port, workdir):
    """Writes the bash script of one file and the expectations it checks."""
    expect = {}
    out = ["set -u", "__doc_failed=0", CHECK]
    n = 0
    rel = path
    pending_bg = []
    for b in blocks:
        if b["skip"]:
            print(f"{rel}:{b['line']}: skipped: {b['skip']}")
            continue
        for c in b["commands"]:
            n += 1
            cmd = c["cmd"].replace("127.0.0.1:8443", f"127.0.0.1:{port}")
            cmd = cmd.replace("localhost:8443", f"localhost:{port}")
            expect[str(n)] = {"where": f"{rel}:{c['line']}", "cmd": c["cmd"],
                              "rc": c["rc"], "words": c["words"], "output": c["output"]}
            out.append(f"echo '== {rel}:{c['line']}' >&2")
            if c["bg"]:
                out.append(f"{{ {cmd}\n}} >\"$__DOC_DIR/{n}.out\" 2>&1")
                out.append(f"__bg_{n}=$!")
                pending_bg.append(n)
            else:
                out.append(f"{{ {cmd}\n}} >\"$__DOC_DIR/{n}.out\" 2>&1")
                out.append(f"__doc_check {n} $?")
    for m in pending_bg:
        out.append(f"wait $__bg_{m}; __doc_check {m} $?")
    with open(os.path.join(workdir, "expect.json"), "w", encoding="utf-8") as f:
        json.dump(expect, f)
    return "\n".join(out) + "\n", n


def check(workdir, ident, rc):
    e = json.load(open(os.path.join(workdir, "expect.json"), encoding="utf-8"))[ident]
    text = open(os.path.join(workdir, f"{ident}.out"), encoding="utf-8",
                errors="replace").read()
    problems = []
    if int(rc) != e["rc"]:
        problems.append(f"exit {rc}, the documentation says {e['rc']}")
    for w in e["words"]:
        if w not in text:
            problems.append(f"output lacks `{w}`")
    pos = 0
    out_lines = text.split("\n")
    for want in e["output"]:
        pattern = "^" + ".*".join(re.escape(p) for p in want.split("…")) + "$"
        while pos < len(out_lines) and not re.match(pattern, out_lines[pos].strip()):
            pos += 1
        if pos == len(out_lines):
            problems.append(f"output lacks a line like `{want}`")
            break
        pos += 1
    sys.stderr.write(text if text.endswith("\n") or not text else text + "\n")
    if problems:
        sys.stderr.write(f"FAIL {e['where']}: {e['cmd']}\n  " + "\n  ".join(problems) + "\n")
        return 1
    return 0


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--check":
        sys.exit(check(sys.argv[2], sys.argv[3], sys.argv[4]))
    ap = argparse.ArgumentParser()
    ap.add_argument("--source-dir", required=True)
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("files", nargs="*", default=["README.md", "docs/jitctl.md"])
    args = ap.parse_args()
    src = os.path.abspath(args.source_dir)
    build = os.path.abspath(args.build_dir)
    for tool in ("jq", "curl"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is needed by the documented examples (scripts/deps.sh installs it)")
    scratch = tempfile.mkdtemp(prefix="jitbroker-docs-")
    proc, port = start_daemon(src, build, scratch)
    failed = 0
    try:
        for f in args.files:
            blocks = parse_blocks(os.path.join(src, f))
            workdir = os.path.join(scratch, "run-" + f.replace("/", "_"))
            os.makedirs(workdir)
            script, count = script_for(f, blocks, port, workdir)
            open(os.path.join(workdir, "script.sh"), "w", encoding="utf-8").write(script)
            env = {k: v for k, v in os.environ.items() if not k.startswith("JITBROKER_")}
            env.update({"__DOC_RUNNER": os.path.abspath(__file__), "__DOC_DIR": workdir,
                        "HOME": scratch})
            r = subprocess.run(["bash", os.path.join(workdir, "script.sh")], cwd=scratch, env=env)
            print(f"{f}: {count} commands, {'ok' if r.returncode == 0 else 'FAILED'}")
            failed |= r.returncode != 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = "killed"
        if rc != 0:
            print(f"daemon exited {rc}")
            failed = 1
        if failed:
            sys.stderr.write(open(os.path.join(scratch, "daemon.log"), encoding="utf-8",
                                  errors="replace").read()[-20000:])
    if not failed:
        shutil.rmtree(scratch, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
