"""Generate core/src/microkube/apiserver/protobuf_fields.json: the protobuf wire facts of the Kubernetes API.

For every message of k8s.io/api and k8s.io/apimachinery at one tag, the table records each field's number,
its JSON name, whether it is a scalar, message or map, its element type, and the Go facts protobuf does
not carry: whether the Go field is a pointer (a present zero value then means something) and whether
its JSON is inlined into the parent (embedded structs). Field numbers and names are facts of the wire
format (Apache-2.0 sources); nothing else is taken from them.

Usage: python tools/gen_protobuf_table.py API_GIT_DIR APIMACHINERY_GIT_DIR [TAG]
(bare git directories, e.g. from the search tool's fetch; TAG defaults to v0.32.4).
The generated data is derived from those Apache-2.0 sources (Copyright The Kubernetes Authors).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "core/src/microkube/apiserver/protobuf_fields.json"
MESSAGE = re.compile(r"^message (\w+) \{$")
FIELD = re.compile(r"^\s*(optional|repeated)\s+([\w.]+)\s+(\w+)\s*=\s*(\d+);")
MAP_FIELD = re.compile(r"^\s*map<\s*([\w.]+)\s*,\s*([\w.]+)\s*>\s+(\w+)\s*=\s*(\d+);")
PACKAGE = re.compile(r"^package ([\w.]+);")
STRUCT = re.compile(r"^type (\w+) struct \{")
SLICE_TYPE = re.compile(r"^type (\w+) \[\][\w.]+\s*$")
GO_FIELD = re.compile(r"^\s*(?:(\w+)\s+)?([\w.*\[\]]+(?:\[[\w.*\[\]]+\][\w.*\[\]]*)?)\s+`([^`]*)`")
TAG = re.compile(r'(\w+):"([^"]*)"')
SCALARS = {"string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "double", "float", "sint32", "sint64",
           "fixed32", "fixed64", "sfixed32", "sfixed64"}


def git(repo: str, *args: str) -> str:
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True, text=True).stdout


def go_facts(repo: str, tag: str, directory: str) -> tuple[dict[tuple[str, int], tuple[str, bool, bool]], set[str]]:
    """(struct, proto number) → (json name, pointer, inline) from the package's Go sources, and the names of
    the Go slice types (``type ExtraValue []string``) that protobuf wraps in a message of ``items`` but JSON
    writes as a plain list."""
    facts: dict[tuple[str, int], tuple[str, bool, bool]] = {}
    slices: set[str] = set()
    files = [f for f in git(repo, "ls-tree", "--name-only", f"{tag}:{directory}").split()
             if f.endswith(".go") and not f.endswith("_test.go") and not f.startswith("generated") and
             not f.startswith("zz_")]
    for name in files:
        struct = None
        for line in git(repo, "show", f"{tag}:{directory}/{name}").splitlines():
            if match := SLICE_TYPE.match(line):
                slices.add(match.group(1))
                continue
            if match := STRUCT.match(line):
                struct = match.group(1)
                continue
            if line.startswith("}"):
                struct = None
                continue
            if struct is None or "protobuf:" not in line:
                continue
            field = GO_FIELD.match(line)
            if field is None:
                continue
            go_type = field.group(2)
            tags = dict(TAG.findall(field.group(3)))
            proto = tags.get("protobuf", "").split(",")
            if len(proto) < 2 or not proto[1].isdigit():
                continue
            json_name = tags.get("json", "").split(",")[0]
            inline = "inline" in tags.get("json", "").split(",")[1:] and not json_name
            facts[(struct, int(proto[1]))] = (json_name, go_type.startswith("*"), inline)
    return facts, slices


def parse_proto(text: str) -> tuple[str, dict[str, list[tuple[int, str, str, str, str]]]]:
    package = ""
    messages: dict[str, list[tuple[int, str, str, str, str]]] = {}
    current: list[tuple[int, str, str, str, str]] | None = None
    for line in text.splitlines():
        if match := PACKAGE.match(line):
            package = match.group(1)
        elif match := MESSAGE.match(line):
            current = messages.setdefault(match.group(1), [])
        elif line.startswith("}"):
            current = None
        elif current is not None:
            if match := MAP_FIELD.match(line):
                current.append((int(match.group(4)), match.group(3), "map", match.group(1), match.group(2)))
            elif match := FIELD.match(line):
                label, kind, name, number = match.groups()
                current.append((int(number), name, label, kind, ""))
    return package, messages


def qualify(package: str, kind: str) -> str:
    if kind in SCALARS:
        return kind
    if kind.startswith("."):
        return kind[1:]
    return f"{package}.{kind}" if "." not in kind else kind


def main() -> None:
    api, machinery = sys.argv[1], sys.argv[2]
    tag = sys.argv[3] if len(sys.argv) > 3 else "v0.32.4"
    table: dict[str, dict[str, list[object]]] = {}
    groups: dict[str, str] = {}
    lists: list[str] = []
    sources = [(api, p) for p in git(api, "ls-tree", "-r", "--name-only", tag).split() if p.endswith("generated.proto")]
    sources += [(machinery, p) for p in git(machinery, "ls-tree", "-r", "--name-only", tag).split()
                if p.endswith("generated.proto") and "testapigroup" not in p]
    for repo, path in sources:
        directory = path.rsplit("/", 1)[0]
        package, messages = parse_proto(git(repo, "show", f"{tag}:{path}"))
        facts, slices = go_facts(repo, tag, directory)
        lists += [f"{package}.{message}" for message in messages if message in slices]
        if repo == api:
            register = git(repo, "show", f"{tag}:{directory}/register.go") if "register.go" in git(
                repo, "ls-tree", "--name-only", f"{tag}:{directory}").split() else ""
            group = re.search(r'GroupName\s*=\s*"([^"]*)"', register)
            groups[package] = group.group(1) if group else ""
        for message, fields in messages.items():
            entry: dict[str, list[object]] = {}
            for number, name, label, kind, value_kind in fields:
                json_name, pointer, inline = facts.get((message, number), (name, False, False))
                flags = ("r" if label == "repeated" else "") + ("p" if pointer else "") + ("i" if inline else "")
                if label == "map":
                    entry[str(number)] = [json_name or name, "map", [qualify(package, kind),
                                                                     qualify(package, value_kind)], flags]
                else:
                    target = qualify(package, kind)
                    entry[str(number)] = [json_name or name, "scalar" if target in SCALARS else "message", target,
                                          flags]
            table[f"{package}.{message}"] = entry
    document = {"source": f"k8s.io/api and k8s.io/apimachinery {tag} (generated.proto, Go struct tags)",
                "groups": groups, "lists": sorted(lists), "messages": dict(sorted(table.items()))}
    OUT.write_text(json.dumps(document, separators=(",", ":"), sort_keys=False) + "\n")
    print(f"{len(table)} messages, {sum(len(m) for m in table.values())} fields -> {OUT}")


if __name__ == "__main__":
    main()
