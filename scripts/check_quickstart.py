"""Run every command of the README quickstart's curl block against a server; check each answer.

    python scripts/check_quickstart.py README.md PORT

The commands run in order, in one bash in the README's folder, exactly as written except that
`localhost:8000` becomes `localhost:PORT`, so a variable one command sets reaches the next. A
`curl` shell function around the real one records each command's curl arguments and response
headers. Then each answer is checked: a search answers 200 with results (a photo's own product
among them, a word of a composed query's text in them, the filters' values on every result),
feedback answers 202 with one event accepted, and no command writes to stderr. Exits 1, naming
every failing command, if any fails.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

TIMEOUT = 600  # seconds for the whole block; a hung command is named by its missing exit status
# `QS_OUT` and `QS_STEP` are set by the script below; the quoting keeps curl's own arguments intact.
WRAPPER = """set -o pipefail
curl() {
    printf '%s\\0' "$@" > "$QS_OUT/$QS_STEP.args"
    command curl -D "$QS_OUT/$QS_STEP.headers" "$@"
}
"""
CURL_EXITS = {6: "unknown host", 7: "could not connect", 26: "could not read a file to send"}
PHOTO = re.compile(r"[\w./-]*images/[\w-]+\.(?:jpe?g|png|webp)\b")  # a demo photo: <id>.jpg


@dataclass
class Command:
    label: str  # the comment above it in the README
    text: str  # as written, continuation lines included


@dataclass
class Outcome:
    command: Command
    rc: int | None  # None: it never finished
    stdout: str = ""
    stderr: str = ""
    status: int | None = None  # the last HTTP status its curl received
    args: list[str] = field(default_factory=list)


def quickstart_commands(readme: Path) -> list[Command]:
    """The commands of the first code block that calls curl in the `## Quickstart` section."""
    text = readme.read_text(encoding="utf-8")
    section = re.search(r"^## Quickstart\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    if section is None:
        raise SystemExit(f"{readme} has no '## Quickstart' section")
    blocks = re.findall(r"^```(?:bash|sh|shell)?\n(.*?)^```", section.group(1), re.M | re.S)
    block = next((b for b in blocks if re.search(r"^[ \t]*(?!#).*\bcurl\b", b, re.M)), None)
    if block is None:
        raise SystemExit(f"{readme}'s quickstart has no code block that calls curl")
    commands: list[Command] = []
    label = ""
    pending: list[str] = []  # the lines of a command continued with a backslash
    for line in block.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            label = line.lstrip("# ").strip() or label
            continue
        pending.append(line)
        if not line.endswith("\\"):
            commands.append(Command(label, "\n".join(pending)))
            pending = []
    if pending:
        commands.append(Command(label, "\n".join(pending)))
    return commands


def run(commands: list[Command], port: int, cwd: Path) -> list[Outcome]:
    """Run the commands in one bash, each with its output kept apart."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        script = [WRAPPER]
        for i, c in enumerate(commands):
            text = c.text.replace("localhost:8000", f"localhost:{port}")
            script.append(
                f"QS_STEP={i}\n{{ {text}\n}} > $QS_OUT/{i}.out 2> $QS_OUT/{i}.err\n"
                f"echo $? > $QS_OUT/{i}.rc\n"
            )
        (out / "quickstart.sh").write_text("\n".join(script), encoding="utf-8")
        env = {**os.environ, "QS_OUT": str(out)}
        # The commands that did not finish have no .rc file.
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                ["bash", str(out / "quickstart.sh")], cwd=cwd, env=env, timeout=TIMEOUT, check=False
            )
        return [_outcome(c, out, i) for i, c in enumerate(commands)]


def _outcome(command: Command, out: Path, i: int) -> Outcome:
    def read(suffix: str) -> str:
        path = out / f"{i}.{suffix}"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    rc = read("rc").strip()
    statuses = re.findall(r"^HTTP/\S+ (\d{3})", read("headers"), re.MULTILINE)
    return Outcome(
        command,
        int(rc) if rc else None,
        read("out"),
        read("err"),
        int(statuses[-1]) if statuses else None,  # the last: after any "100 Continue"
        [a for a in read("args").split("\0") if a],
    )


def demo_photos(commands: list[Command], cwd: Path) -> dict[str, str]:
    """The product id (file stem) of each demo photo the commands name, by content digest."""
    paths = {cwd / m for c in commands for m in PHOTO.findall(c.text)}
    return {hashlib.sha256(p.read_bytes()).hexdigest(): p.stem for p in paths if p.is_file()}


def _sent_photo(image: str, cwd: Path) -> bytes:
    """The image a request sent: a form part's `@file`, or base64 (maybe a data: URL)."""
    if image.startswith("@"):
        return (cwd / image[1:].split(";")[0]).read_bytes()
    return base64.b64decode(image.rpartition(",")[2])


def _request(args: list[str]) -> tuple[str, dict[str, Any]]:
    """The URL path and the fields (JSON body or form parts) curl was given."""
    path, fields = "", {}
    for flag, value in zip(args, args[1:], strict=False):
        if flag in ("-d", "--data", "--data-raw", "--data-binary"):
            body = json.loads(value)
            fields.update(body if isinstance(body, dict) else {})
        elif flag in ("-F", "--form") and "=" in value:
            name, _, part = value.partition("=")
            fields[name] = json.loads(part) if name == "filters" else part
    for arg in args:
        if re.match(r"(https?://)?[\w.-]+:\d+/", arg):
            path = urlsplit(arg if "://" in arg else f"http://{arg}").path
    return path, fields


def problems(o: Outcome, photos: dict[str, str], cwd: Path) -> list[str]:
    """What is wrong with one command's answer (nothing: it works as the README says)."""
    if o.rc is None:
        return [f"did not finish within {TIMEOUT} s"]
    said = "\n".join(o.stderr.strip().splitlines()[-3:])  # a traceback's last lines say why
    if o.rc != 0:
        why = CURL_EXITS.get(o.rc) if o.command.text.startswith("curl ") else None
        exited = f"exited {o.rc}" + (f" (curl: {why})" if why else "")
        return [exited + (f": {said}" if said else "")]
    # A clean command writes nothing to stderr: this catches e.g. base64 failing inside an argument.
    noise = [f"wrote to stderr: {said}"] if said else []
    if not o.args:
        return noise  # no curl in it: its exit status and stderr say it all
    try:
        path, fields = _request(o.args)
        sent = _sent_photo(fields["image"], cwd) if fields.get("image") else None
    except (ValueError, OSError) as e:  # JSON, base64 and a missing file all say what is wrong
        return [*noise, f"its request is not what the API takes: {e}"]
    reply: Any = None
    if o.stdout.strip():  # empty when the command kept the answer in a variable
        try:
            reply = json.loads(o.stdout)
        except json.JSONDecodeError:
            return [*noise, f"answered {o.status} with non-JSON: {o.stdout[:300]!r}"]
    if path == "/v1/search":
        photo = photos.get(hashlib.sha256(sent).hexdigest()) if sent is not None else None
        return noise + _search_problems(o, fields, reply, photo)
    if path == "/v1/feedback":
        if o.status != 202:
            return [*noise, f"expected 202, got {o.status}: {o.stdout[:500]}"]
        if reply is not None and reply.get("accepted") != 1:
            return [*noise, f"expected accepted=1: {reply}"]
        return noise
    if o.status and 200 <= o.status < 300:
        return noise
    return [*noise, f"answered {o.status}: {o.stdout[:500]}"]


def _search_problems(
    o: Outcome, fields: dict[str, Any], reply: Any, photo: str | None
) -> list[str]:
    """`photo`: the product id of the demo photo the search sent, if it sent one."""
    if o.status != 200:
        return [f"expected 200, got {o.status}: {o.stdout[:500]}"]
    if reply is None:
        return []
    results = reply.get("results") or []
    if not results:
        return [f"no results: {reply}"]
    found: list[str] = []
    if "image" in fields and not fields["image"]:
        found.append("it sends an empty image")
    if fields.get("image"):
        expected = "composed" if fields.get("query") else "image"
        if reply.get("query_type", expected) != expected:
            found.append(f"query_type is {reply['query_type']!r}, expected {expected!r}")
        ids = [r["product_id"] for r in results]
        if expected == "image" and photo is not None and photo not in ids:
            found.append(f"the photo's own product {photo} is not among {ids}")
        if expected == "composed" and not _words_show(fields["query"], results):
            found.append(f"no word of {fields['query']!r} shows in any result: {ids}")
    for name, wanted in (fields.get("filters") or {}).items():
        allowed = wanted if isinstance(wanted, list) else [wanted]
        for r in results:
            if r["attributes"].get(name) not in allowed:
                got = r["attributes"].get(name)
                found.append(f"result {r['product_id']} has {name}={got!r}, not in the filter")
    return found


def _words_show(query: str, results: list[dict[str, Any]]) -> bool:
    """Whether some result's title or attributes name a word of the query ("red" of "but in
    red"): the words of a composed query must steer it away from the photo alone."""
    words = set(re.findall(r"\w{3,}", query.lower()))
    for r in results:
        text = " ".join([r["title"], *map(str, r["attributes"].values())]).lower()
        if words & set(re.findall(r"\w+", text)):
            return True
    return False


def _summary(o: Outcome) -> str:
    if not o.args:
        return "done (no request)"
    try:
        results = json.loads(o.stdout).get("results") if o.stdout.strip() else None
    except (json.JSONDecodeError, AttributeError):
        results = None
    if results:
        return f"{o.status}, {len(results)} results, first {results[0]['title']!r}"
    return f"{o.status}, {o.stdout.strip()[:120] or '(answer kept in shell variables)'}"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    readme, port = Path(argv[0]).resolve(), int(argv[1])
    commands = quickstart_commands(readme)
    photos = demo_photos(commands, readme.parent)
    failed = 0
    for o in run(commands, port, readme.parent):
        found = problems(o, photos, readme.parent)
        if found:
            failed += 1
            print(f"FAIL  {o.command.label}")
            print(textwrap.indent(o.command.text, "      "))
            print(textwrap.indent("\n".join(found), "  ->  "))
        else:
            print(f"ok    {o.command.label}: {_summary(o)}")
    if failed:
        print(f"{failed} of {len(commands)} quickstart commands failed; see FAIL above")
        return 1
    print(f"all {len(commands)} quickstart commands work")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
