"""The app spec: YAML text (app.yaml) -> `paas.model.AppSpec`.

Owns the user-facing spec format and all of its validation. `parse_spec` is pure: it composes
the YAML with PyYAML's SafeLoader, walks the node tree itself (so every problem carries the
line of the offending node), refuses anchors/aliases, duplicate keys and unknown fields, and
raises one `SpecError` listing EVERY problem. `load_spec_file` is the only I/O: a size-checked read.
"""
from __future__ import annotations

import difflib
import json
import os
import posixpath
import re
import shlex
from collections.abc import Callable
from typing import Any, NamedTuple

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from paas.model import AppSpec, Build, Health, Process, Resources, RestartPolicy, Rollout

MAX_SPEC_BYTES = 64 * 1024
MAX_NODES = 10_000
MAX_DEPTH = 50
DOCUMENT = "(document)"          # the `field` of problems about the file as a whole

_T = "tag:yaml.org,2002:"
_REFUSED = "!paas/anchor-or-alias"
_ANCHOR_MSG = "YAML anchors and aliases are not allowed"
_SHAPES = {_T + "map": MappingNode, _T + "seq": SequenceNode}
_KIND = {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
         "timestamp": "date", "map": "mapping", "seq": "list"}

_NAME_RE = re.compile(r"[a-z](?:[a-z0-9-]{0,38}[a-z0-9])?")
_PROCESS_RE = re.compile(r"[a-z][a-z0-9-]{0,19}")
_ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LABEL_RE = re.compile(r"[A-Za-z0-9._-]{1,63}")
_DNS_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_HEALTH_PATH_RE = re.compile(r"/[A-Za-z0-9/._~%!$&()*+,;=:@?-]{0,199}")
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]+)?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_RE = re.compile(rf"(?=.{{1,255}}$)(?:{_HOST}/)?{_COMPONENT}(?:/{_COMPONENT})*"
                       r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)?")
_MEMORY_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|k|K|M|G|T)?")
_CPU_RE = re.compile(r"(\d+(?:\.\d+)?)(m)?")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_MEMORY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
                 "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, None: 1}


class SpecProblem(NamedTuple):
    file: str
    line: int      # 1-based
    field: str     # dotted path, e.g. processes.web.port, domains[1]; DOCUMENT for the whole file
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


class SpecError(Exception):
    """The spec is invalid; `.problems` lists every problem found, in line order."""

    def __init__(self, problems: list[SpecProblem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def _quantity(s: Any, pattern: re.Pattern[str], units: dict[str | None, float], hint: str,
              plain: tuple[type, ...] = (int, float)) -> float:
    """A plain number, or a string of a number and an optional unit from `units`; ValueError if not."""
    if isinstance(s, plain) and not isinstance(s, bool):
        return float(s)
    m = pattern.fullmatch(s.strip()) if isinstance(s, str) else None
    if not m:
        raise ValueError(f"invalid value {s!r}: {hint}")
    return float(m[1]) * units[m[2]]


def parse_duration(s: Any) -> float:
    """'2s', '500ms', '1m', '1h' or a plain number of seconds -> float seconds. ValueError if invalid."""
    return _quantity(s, _DURATION_RE, _DURATION_UNITS, "use seconds or a unit, like '2s', '500ms', '1m'")


def parse_memory(s: Any) -> int:
    """'128Mi', '1Gi' (binary), '512M', '64k' (decimal) or plain bytes -> int bytes. ValueError if invalid."""
    return int(_quantity(s, _MEMORY_RE, _MEMORY_UNITS, "use bytes or a suffix, like '128Mi', '1Gi', '512M'",
                         plain=(int,)))


def _parse_cpu(s: Any) -> float:
    """0.25, '0.25' or '250m' (millicores) -> float cores. ValueError if invalid."""
    return _quantity(s, _CPU_RE, {None: 1.0, "m": 0.001}, "use cores like 0.25 or millicores like '250m'")


def load_spec_file(path: str) -> AppSpec:
    """Read a spec file (refusing files over MAX_SPEC_BYTES before reading) and parse it.
    OSError (missing file, permissions) propagates; everything about the content is a SpecError."""
    size = os.stat(path).st_size
    if size > MAX_SPEC_BYTES:
        raise SpecError([_too_big(path, size)])
    with open(path, "rb") as f:
        data = f.read(MAX_SPEC_BYTES + 1)   # the file may have grown: parse_spec refuses the extra byte
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise SpecError([SpecProblem(path, line, DOCUMENT, "the file is not valid UTF-8 text")]) from None
    return parse_spec(text, filename=path)


def parse_spec(text: str, filename: str = "app.yaml") -> AppSpec:
    """Validate a YAML app spec and return it as an AppSpec; SpecError lists every problem."""
    reader = _Reader(filename)
    spec = reader.document(text)
    if reader.problems or spec is None:
        raise SpecError(sorted(reader.problems, key=lambda p: p.line))
    return spec


def _too_big(file: str, size: int) -> SpecProblem:
    return SpecProblem(file, 1, DOCUMENT, f"the spec is {size} bytes; the limit is {MAX_SPEC_BYTES} bytes")


class _Loader(yaml.SafeLoader):
    """SafeLoader that caps nodes and depth, and turns anchored/alias nodes into refusal markers
    (so aliased subtrees are never shared or expanded)."""

    node_count = 0
    depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        self.node_count += 1
        if self.node_count > MAX_NODES or self.depth >= MAX_DEPTH:
            what = f"more than {MAX_NODES} values" if self.node_count > MAX_NODES else "nesting too deep"
            raise yaml.MarkedYAMLError(problem=f"the spec is too complex ({what})", problem_mark=event.start_mark)
        if isinstance(event, yaml.AliasEvent):
            self.get_event()
            return ScalarNode(_REFUSED, event.anchor, event.start_mark, event.end_mark)
        self.depth += 1
        node = super().compose_node(parent, index)
        self.depth -= 1
        if event.anchor is not None:
            return ScalarNode(_REFUSED, event.anchor, event.start_mark, event.end_mark)
        return node


def _kind(node: Node) -> str:
    """How a node reads in an error message: "string '3'", "integer 3", "null", "a list"."""
    tag = node.tag.removeprefix(_T)
    if node.tag == _REFUSED:
        return "a YAML anchor or alias (not allowed)"
    if isinstance(node, MappingNode | SequenceNode):
        return f"a {_KIND.get(tag, f'collection tagged {node.tag!r}')}"
    if tag == "null":
        return "null"
    shown = node.value if len(node.value) <= 40 else node.value[:37] + "..."
    return f"string {shown!r}" if tag == "str" else f"{_KIND.get(tag, f'value tagged {node.tag!r}')} {shown}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Reader:
    """Walks the composed node tree, one method per field group, collecting problems."""

    def __init__(self, filename: str):
        self.file = filename
        self.problems: list[SpecProblem] = []
        self._constructor = yaml.constructor.SafeConstructor()

    def add(self, node: Node, field: str, message: str) -> None:
        self.problems.append(SpecProblem(self.file, node.start_mark.line + 1, field or DOCUMENT, message))

    # -- generic node access -------------------------------------------------------------------

    def expect(self, node: Node, path: str, what: str, *tags: str) -> bool:
        """True if node has one of the YAML `tags` (short names, e.g. 'int'); else a problem."""
        if node.tag == _REFUSED:
            self.add(node, path, _ANCHOR_MSG)
            return False
        if node.tag in {_T + t for t in tags} and isinstance(node, _SHAPES.get(node.tag, ScalarNode)):
            return True
        self.add(node, path, f"expected {what}, got {_kind(node)}")
        return False

    def value(self, node: Node, path: str) -> Any:
        """The Python value of a scalar (None, with a problem, if its explicit tag does not fit)."""
        try:
            return self._constructor.construct_object(node)
        except (ValueError, KeyError, TypeError, yaml.YAMLError):
            self.add(node, path, f"invalid {_kind(node)}")
            return None

    def entries(self, node: Node, path: str) -> list[tuple[str, Node, Node]]:
        """A mapping's (key, key node, value node) entries, refusing duplicates; [] if not a mapping."""
        if not self.expect(node, path, "a mapping", "map"):
            return []
        first_line: dict[str, int] = {}
        out = []
        for knode, vnode in node.value:
            if not isinstance(knode, ScalarNode) or knode.tag == _REFUSED:
                bad = _ANCHOR_MSG if knode.tag == _REFUSED else f"keys must be plain names, got {_kind(knode)}"
                self.add(knode, path, bad)
                continue
            key, line = knode.value, knode.start_mark.line + 1
            if key in first_line:
                self.add(knode, _join(path, key),
                         f"duplicate key '{key}' (lines {first_line[key]} and {line}); remove one")
                continue
            first_line[key] = line
            out.append((key, knode, vnode))
        return out

    def fields(self, node: Node, path: str, known: tuple[str, ...],
               required: tuple[str, ...] = ()) -> dict[str, Node]:
        """A mapping with a fixed set of fields; unknown ones are refused with a suggestion."""
        found = {}
        for key, knode, vnode in self.entries(node, path):
            if key in known:
                found[key] = vnode
                continue
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"expected one of: {', '.join(known)}"
            self.add(knode, _join(path, key), f"unknown field '{key}'; {hint}")
            self.refuse_anchors(vnode, _join(path, key))
        for key in required:
            if key not in found:
                self.add(node, _join(path, key), "required field is missing")
        return found

    def refuse_anchors(self, node: Node, path: str) -> None:
        """Report anchors/aliases inside a subtree that is otherwise not read (an unknown field)."""
        if node.tag == _REFUSED:
            self.add(node, path, _ANCHOR_MSG)
        elif isinstance(node, SequenceNode):
            for i, item in enumerate(node.value):
                self.refuse_anchors(item, f"{path}[{i}]")
        elif isinstance(node, MappingNode):
            for knode, vnode in node.value:
                self.refuse_anchors(vnode, _join(path, str(knode.value)))

    def get(self, f: dict[str, Node], key: str, path: str, parse: Callable[..., Any], *args: Any,
            default: Any = None) -> Any:
        """parse(f[key], path.key, *args) if the field is present and valid, else `default`."""
        if key not in f:
            return default
        result = parse(f[key], _join(path, key), *args)
        return default if result is None else result

    def sequence(self, node: Node, path: str) -> list[Node]:
        return node.value if self.expect(node, path, "a list", "seq") else []

    def string(self, node: Node, path: str, what: str = "a string", tags: tuple[str, ...] = ("str",)) -> str | None:
        if not self.expect(node, path, what, *tags):
            return None
        if "\x00" in node.value:
            self.add(node, path, "must not contain NUL characters")
            return None
        return node.value

    def text(self, node: Node, path: str) -> str | None:
        """A string, or a number/boolean/date kept exactly as written (env values, labels)."""
        return self.string(node, path, 'a string (write "" for empty)', ("str", "int", "float", "bool", "timestamp"))

    def integer(self, node: Node, path: str, lo: int, hi: int | None) -> int | None:
        if not self.expect(node, path, "an integer", "int"):
            return None
        return self.within(node, path, self.value(node, path), lo, hi)

    def convert(self, node: Node, path: str, parse: Callable[[Any], Any], lo: Any, hi: Any,
                bounds: tuple[str, str]) -> Any:
        """A number or string run through `parse` (ValueError -> problem) and range-checked."""
        if not self.expect(node, path, "a number or a string", "int", "float", "str"):
            return None
        try:
            value = parse(self.value(node, path))
        except ValueError as e:
            self.add(node, path, str(e))
            return None
        return self.within(node, path, value, lo, hi, bounds)

    def within(self, node: Node, path: str, value: Any, lo: Any, hi: Any,
               bounds: tuple[str, str] | None = None) -> Any:
        lo_s, hi_s = bounds or (str(lo), str(hi))
        if value is None or (lo <= value and (hi is None or value <= hi)):
            return value
        limit = f"at least {lo_s}" if hi is None else f"between {lo_s} and {hi_s}"
        self.add(node, path, f"must be {limit}, got {node.value}")
        return None

    def matching(self, node: Node, path: str, pattern: re.Pattern[str], why: str) -> str | None:
        s = self.string(node, path)
        if s is not None and not pattern.fullmatch(s):
            self.add(node, path, f"invalid value {s!r}: {why}")
            return None
        return s

    # -- field groups --------------------------------------------------------------------------

    def document(self, text: str) -> AppSpec | None:
        if len(text.encode("utf-8", "surrogatepass")) > MAX_SPEC_BYTES:
            self.problems.append(_too_big(self.file, len(text.encode("utf-8", "surrogatepass"))))
            return None
        try:
            root = yaml.compose(text, Loader=_Loader)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
            line = mark.line + 1 if mark else text.count("\n", 0, getattr(e, "position", 0)) + 1
            problem = getattr(e, "problem", None) or getattr(e, "reason", None) or str(e)
            context = getattr(e, "context", None)
            message = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
            self.problems.append(SpecProblem(self.file, line, DOCUMENT, message))
            return None
        if root is None or not isinstance(root, MappingNode) or root.tag != _T + "map":
            got = "an empty document" if root is None else _kind(root)
            line = root.start_mark.line + 1 if root is not None else 1
            self.problems.append(SpecProblem(self.file, line, DOCUMENT,
                                             f"the spec must be a mapping (name:, processes:, ...), got {got}"))
            return None
        return self.app(root)

    def app(self, root: MappingNode) -> AppSpec | None:
        known = ("name", "build", "image", "processes", "env", "domains", "constraints", "rollout", "restart")
        f = self.fields(root, "", known, required=("name", "processes"))
        if "build" in f and "image" in f:
            self.add(f["image"], "image", "give either 'build' or 'image', not both")
        elif "build" not in f and "image" not in f:
            self.add(root, "build", "one of 'build' (build from source) or 'image' (prebuilt) is required")
        name = self.get(f, "name", "", self.matching, _NAME_RE,
                        "app names are 1-40 characters of a-z, 0-9 and '-', start with a letter "
                        "and do not end with '-'")
        processes = self.get(f, "processes", "", self.processes, default={})
        rest = self.optional_fields(f)
        return None if self.problems else AppSpec(name=name, processes=processes, **rest)

    def optional_fields(self, f: dict[str, Node]) -> dict[str, Any]:
        return dict(
            image=self.get(f, "image", "", self.image),
            build=self.get(f, "build", "", self.build),
            env=self.get(f, "env", "", self.env, default={}),
            domains=self.get(f, "domains", "", self.domains, default=()),
            node_labels=self.get(f, "constraints", "", self.constraints, default={}),
            rollout=self.get(f, "rollout", "", self.rollout, default=Rollout()),
            restart=self.get(f, "restart", "", self.restart, default=RestartPolicy()),
        )

    def restart(self, node: Node, path: str) -> RestartPolicy | None:
        """Crashed containers start again after backoff, doubling up to max_backoff (with jitter)."""
        f = self.fields(node, path, ("backoff", "max_backoff"))
        before = len(self.problems)
        backoff = self.get(f, "backoff", path, self.convert, parse_duration, 0.1, 600.0, ("0.1s", "600s"),
                           default=1.0)
        cap = self.get(f, "max_backoff", path, self.convert, parse_duration, 0.1, 3600.0, ("0.1s", "3600s"),
                       default=60.0)
        if len(self.problems) == before and cap < backoff:
            self.add(f.get("max_backoff", node), _join(path, "max_backoff"),
                     f"must not be shorter than backoff ({backoff:g}s), got {cap:g}s")
        return RestartPolicy(backoff=backoff, max_backoff=cap)

    def image(self, node: Node, path: str) -> str | None:
        return self.matching(node, path, _IMAGE_RE, "expected [host[:port]/]path[:tag][@sha256:digest], at most "
                             "255 characters, lowercase path, e.g. 'registry.example.com:5000/team/app:1.2'")

    def build(self, node: Node, path: str) -> Build | None:
        f = self.fields(node, path, ("context", "dockerfile"))
        return Build(context=self.get(f, "context", path, self.relative_path, default="."),
                     dockerfile=self.get(f, "dockerfile", path, self.relative_path, default="Dockerfile"))

    def relative_path(self, node: Node, path: str) -> str | None:
        s = self.string(node, path)
        if s is not None and (not s or s.startswith(("/", "\\")) or posixpath.normpath(s).split("/")[0] == ".."):
            self.add(node, path, f"must be a relative path inside the app directory (no leading '/', no '..' "
                                 f"going outside it), got {s!r}")
            return None
        return s

    def processes(self, node: Node, path: str) -> dict[str, Process] | None:
        entries = self.entries(node, path)
        if isinstance(node, MappingNode) and not entries:
            self.add(node, path, "at least one process is required")
        out = {}
        for name, knode, vnode in entries:
            sub = _join(path, name)
            if not _PROCESS_RE.fullmatch(name):
                self.add(knode, sub, f"invalid process name {name!r}: 1-20 characters of a-z, 0-9 and '-', "
                                     "starting with a letter")
            out[name] = self.process(name, vnode, sub)
        return out

    def process(self, name: str, node: Node, path: str) -> Process:
        f = self.fields(node, path, ("command", "replicas", "port", "health", "resources", "drain", "stop_timeout"))
        port = self.get(f, "port", path, self.integer, 1, 65535)
        health = self.get(f, "health", path, self.health)
        if "health" in f and "port" not in f:
            self.add(f["health"], _join(path, "health"), "health checks need a 'port'; set one or remove health")
        elif "port" in f and health is None:
            health = Health()
        return Process(
            name=name,
            command=self.get(f, "command", path, self.command),
            replicas=self.get(f, "replicas", path, self.integer, 0, 100, default=1),
            port=port,
            health=health,
            resources=self.get(f, "resources", path, self.resources, default=Resources()),
            drain=self.get(f, "drain", path, self.convert, parse_duration, 0.0, 300.0, ("0s", "300s"),
                           default=5.0),
            stop_timeout=self.get(f, "stop_timeout", path, self.convert, parse_duration, 0.0, 300.0,
                                  ("0s", "300s"), default=10.0),
        )

    def command(self, node: Node, path: str) -> tuple[str, ...] | None:
        if isinstance(node, ScalarNode) and node.tag == _T + "str":
            try:
                example = json.dumps(shlex.split(node.value))
            except ValueError:
                example = json.dumps(node.value.split())
            self.add(node, path, f"expected a list of strings, got {_kind(node)}; write it as a list: {example}")
            return None
        if not self.expect(node, path, "a list of strings", "seq"):
            return None
        items = node.value
        if not items:
            self.add(node, path, "must not be empty (leave 'command' out to use the image's default)")
        args = [self.string(item, f"{path}[{i}]") for i, item in enumerate(items)]
        return tuple(args) if items and None not in args else None

    def health(self, node: Node, path: str) -> Health | None:
        f = self.fields(node, path, ("path", "interval", "timeout", "healthy_after", "unhealthy_after"))
        before, d = len(self.problems), Health()
        why = "must start with '/' and use only URL-safe characters (no spaces, quotes or braces), max 200"
        interval = self.get(f, "interval", path, self.convert, parse_duration, 0.1, 300.0, ("0.1s", "300s"),
                            default=d.interval)
        timeout = self.get(f, "timeout", path, self.convert, parse_duration, 0.1, 60.0, ("0.1s", "60s"),
                           default=d.timeout)
        if len(self.problems) == before and timeout > interval:
            self.add(f.get("timeout", node), _join(path, "timeout"),
                     f"must not be longer than interval ({interval:g}s), got {timeout:g}s")
        return Health(
            path=self.get(f, "path", path, self.matching, _HEALTH_PATH_RE, why, default=d.path),
            interval=interval,
            timeout=timeout,
            healthy_after=self.get(f, "healthy_after", path, self.integer, 1, 20, default=d.healthy_after),
            unhealthy_after=self.get(f, "unhealthy_after", path, self.integer, 1, 20, default=d.unhealthy_after),
        )

    def resources(self, node: Node, path: str) -> Resources | None:
        f = self.fields(node, path, ("cpu", "memory"))
        d = Resources()
        return Resources(
            cpu=self.get(f, "cpu", path, self.convert, _parse_cpu, 0.01, 64.0, ("0.01", "64"), default=d.cpu),
            memory=self.get(f, "memory", path, self.convert, parse_memory, 4 * 2**20, 64 * 2**30,
                            ("4Mi", "64Gi"), default=d.memory),
        )

    def env(self, node: Node, path: str) -> dict[str, str] | None:
        entries = self.entries(node, path)
        if len(entries) > 100:
            self.add(node, path, f"at most 100 variables are allowed, got {len(entries)}")
        out = {}
        for key, knode, vnode in entries:
            sub = _join(path, key)
            problem = env_key_problem(key)
            if problem is not None:
                self.add(knode, sub, problem.split(": ", 1)[1])
            value = self.text(vnode, sub)
            if value is not None and len(value.encode("utf-8", "surrogatepass")) > 32 * 1024:
                self.add(vnode, sub, "value is longer than 32 KiB")
            elif value is not None:
                out[key] = value
        return out

    def domains(self, node: Node, path: str) -> tuple[str, ...] | None:
        items = self.sequence(node, path)
        if len(items) > 20:
            self.add(node, path, f"at most 20 domains are allowed, got {len(items)}")
        first_line: dict[str, int] = {}
        for i, item in enumerate(items):
            sub, domain = f"{path}[{i}]", self.string(item, f"{path}[{i}]")
            problem = _domain_problem(domain) if domain is not None else None
            if problem:
                self.add(item, sub, f"invalid domain {domain!r}: {problem}")
            elif domain in first_line:
                self.add(item, sub, f"duplicate domain {domain!r} (first at line {first_line[domain]})")
            elif domain is not None:
                first_line[domain] = item.start_mark.line + 1
        return tuple(first_line)

    def constraints(self, node: Node, path: str) -> dict[str, str] | None:
        f = self.fields(node, path, ("node_labels",))
        out = {}
        for key, knode, vnode in self.entries(f["node_labels"], _join(path, "node_labels")) if "node_labels" in f else ():
            sub = _join(path, f"node_labels.{key}")
            value = self.text(vnode, sub)
            if not _LABEL_RE.fullmatch(key):
                self.add(knode, sub, f"invalid label key {key!r}: 1-63 characters of A-Z, a-z, 0-9, '.', '_', '-'")
            elif value is not None and not _LABEL_RE.fullmatch(value):
                self.add(vnode, sub, f"invalid label value {value!r}: 1-63 characters of A-Z, a-z, 0-9, '.', '_', '-'")
            elif value is not None:
                out[key] = value
        return out

    def rollout(self, node: Node, path: str) -> Rollout | None:
        f = self.fields(node, path, ("max_surge", "max_unavailable", "progress_deadline"))
        before = len(self.problems)
        surge = self.get(f, "max_surge", path, self.integer, 0, None, default=1)
        unavailable = self.get(f, "max_unavailable", path, self.integer, 0, None, default=0)
        if len(self.problems) == before and surge == 0 and unavailable == 0:
            self.add(node, path, "max_surge and max_unavailable cannot both be 0: the rollout could never progress")
        deadline = self.get(f, "progress_deadline", path, self.convert, parse_duration, 1.0, 3600.0,
                            ("1s", "3600s"), default=60.0)
        return Rollout(max_surge=surge, max_unavailable=unavailable, progress_deadline=deadline)


def env_key_problem(key: str) -> str | None:
    """Why `key` cannot name an env variable (as "KEY: why"), or None; shared with `paas config`."""
    if not isinstance(key, str) or not _ENV_KEY_RE.fullmatch(key):
        return f"{key}: invalid variable name {key!r}: use letters, digits and '_', not starting with a digit"
    if key.upper().startswith("PAAS_"):
        return f"{key}: names starting with PAAS_ are reserved for the platform"
    return None


def _domain_problem(domain: str) -> str | None:
    """Why `domain` is not a usable lowercase DNS name, or None."""
    labels = domain.split(".")
    bad = next((label for label in labels if not _DNS_LABEL_RE.fullmatch(label)), None)
    checks = [
        ("*" in domain, "wildcard domains are not supported"),
        (domain != domain.lower(), "domains must be lowercase"),
        (len(domain) > 253, "longer than 253 characters"),
        (len(labels) < 2, "needs at least two labels, like 'app.example.com'"),
        (bad is not None, f"label {bad!r} must be 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"),
        (labels[-1].isdigit(), "IP addresses are not domains"),
    ]
    return next((message for failed, message in checks if failed), None)
