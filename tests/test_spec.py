"""Tests for paas.spec: app.yaml text -> AppSpec, and every problem reported at once with its line."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from paas.model import AppSpec, Build, Health, Resources, Rollout
from paas.spec import (
    MAX_SPEC_BYTES,
    SpecError,
    SpecProblem,
    load_spec_file,
    parse_duration,
    parse_memory,
    parse_spec,
)

SPECS = Path(__file__).parent / "specs"
MiB, GiB = 2**20, 2**30


def spec(text: str) -> AppSpec:
    return parse_spec(textwrap.dedent(text).lstrip("\n"))


def problems(text: str, filename: str = "app.yaml") -> list[SpecProblem]:
    with pytest.raises(SpecError) as excinfo:
        parse_spec(textwrap.dedent(text).lstrip("\n"), filename)
    return excinfo.value.problems


def prefixes(text: str) -> list[str]:
    """Each problem as its `file:line: field:` prefix, in the order reported."""
    return [f"{p.file}:{p.line}: {p.field}:" for p in problems(text)]


def lookup(obj: Any, dotted: str) -> Any:
    """spec 'processes.web.health.interval' -> the value, through attributes and mappings."""
    for part in dotted.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


# -- good specs ---------------------------------------------------------------------------------

GOOD = [
    ("minimal image", """
        name: hello
        image: nginx
        processes:
          web: {}
     """, {"name": "hello", "image": "nginx", "build": None, "processes.web.name": "web",
           "processes.web.command": None, "processes.web.replicas": 1, "processes.web.port": None,
           "processes.web.health": None, "processes.web.resources": Resources(), "env": {},
           "domains": (), "node_labels": {}, "rollout": Rollout()}),
    ("full example", """
        name: hello
        build: {context: ., dockerfile: Dockerfile}
        processes:
          web:
            command: ["python3", "-m", "http.server", "8000"]
            replicas: 3
            port: 8000
            health: {path: /, interval: 2s, timeout: 1s, healthy_after: 1, unhealthy_after: 3}
            resources: {cpu: 0.25, memory: 128Mi}
        env: {GREETING: hello}
        domains: [hello.example.com]
        constraints: {node_labels: {disk: ssd}}
        rollout: {max_surge: 1, max_unavailable: 0}
     """, {"build": Build(".", "Dockerfile"), "image": None,
           "processes.web.command": ("python3", "-m", "http.server", "8000"),
           "processes.web.replicas": 3, "processes.web.port": 8000,
           "processes.web.health": Health("/", 2.0, 1.0, 1, 3),
           "processes.web.resources": Resources(cpu=0.25, memory=128 * MiB),
           "env": {"GREETING": "hello"}, "domains": ("hello.example.com",),
           "node_labels": {"disk": "ssd"}, "rollout": Rollout(1, 0)}),
    ("port without health gets default health", """
        name: a
        image: nginx
        processes: {web: {port: 80}}
     """, {"processes.web.health": Health()}),
    ("build with defaults and nested paths", """
        name: app-2
        build: {context: services/api, dockerfile: docker/../Dockerfile.prod}
        processes: {worker: {replicas: 0}}
     """, {"build": Build("services/api", "docker/../Dockerfile.prod"), "processes.worker.replicas": 0}),
    ("several processes, block command", """
        name: multi
        image: registry.example.com:5000/team/app:1.2
        processes:
          web:
            port: 8080
          worker:
            command:
              - celery
              - worker
          clock-1:
            replicas: 100
     """, {"image": "registry.example.com:5000/team/app:1.2", "processes.worker.command": ("celery", "worker"),
           "processes.clock-1.replicas": 100, "processes.web.port": 8080}),
    ("image with digest", f"""
        name: pinned
        image: localhost:5000/app@sha256:{'a' * 64}
        processes: {{web: {{}}}}
     """, {"image": f"localhost:5000/app@sha256:{'a' * 64}"}),
    ("env values: numbers and bools kept as written", """
        name: envy
        image: nginx
        processes: {web: {}}
        env:
          VERSION: 1.10
          DEBUG: true
          WORKERS: 4
          EMPTY: ""
          _under: x
     """, {"env": {"VERSION": "1.10", "DEBUG": "true", "WORKERS": "4", "EMPTY": "", "_under": "x"}}),
    ("durations and sizes in all forms", """
        name: units
        image: nginx
        processes:
          web:
            port: 80
            health: {path: "/healthz?full=1", interval: 1m, timeout: 500ms}
            resources: {cpu: 250m, memory: 1Gi}
          api:
            port: 81
            health: {interval: 5, timeout: 0.5}
            resources: {cpu: 2, memory: 512M}
          tiny:
            resources: {cpu: "0.01", memory: 4194304}
     """, {"processes.web.health": Health("/healthz?full=1", 60.0, 0.5, 1, 3),
           "processes.web.resources": Resources(0.25, GiB),
           "processes.api.health": Health("/", 5.0, 0.5, 1, 3),
           "processes.api.resources": Resources(2.0, 512_000_000),
           "processes.tiny.resources": Resources(0.01, 4 * MiB)}),
    ("domains, labels and rollout", """
        name: site
        image: nginx
        processes: {web: {port: 80}}
        domains: [example.com, www.example.com, a-b.c-d.example]
        constraints:
          node_labels: {disk: ssd, zone: eu-1.a, gpu: true}
        rollout: {max_surge: 0, max_unavailable: 1}
     """, {"domains": ("example.com", "www.example.com", "a-b.c-d.example"),
           "node_labels": {"disk": "ssd", "zone": "eu-1.a", "gpu": "true"}, "rollout": Rollout(0, 1)}),
]


@pytest.mark.parametrize("text, expected", [case[1:] for case in GOOD], ids=[case[0] for case in GOOD])
def test_good_spec(text: str, expected: dict[str, Any]) -> None:
    result = spec(text)
    for dotted, value in expected.items():
        assert lookup(result, dotted) == value, dotted


def test_result_types_are_plain_and_round_trip() -> None:
    result = load_spec_file(str(SPECS / "hello.yaml"))
    web = result.processes["web"]
    assert isinstance(web.command, tuple) and isinstance(result.domains, tuple)
    assert isinstance(web.health.interval, float) and isinstance(web.resources.memory, int)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in result.env.items())
    assert AppSpec.from_dict(result.to_dict()) == result


# -- bad specs: exact `file:line: field:` of every problem -------------------------------------

BAD = [
    ("name missing, no build or image", """
        processes: {web: {}}
     """, ["app.yaml:1: name:", "app.yaml:1: build:"]),
    ("bad name", """
        name: Hello_World-
        image: nginx
        processes: {web: {}}
     """, ["app.yaml:1: name:"]),
    ("name too long", f"""
        name: {'a' * 41}
        image: nginx
        processes: {{web: {{}}}}
     """, ["app.yaml:1: name:"]),
    ("both build and image", """
        name: a
        build: {}
        image: nginx
        processes: {web: {}}
     """, ["app.yaml:3: image:"]),
    ("bad image references", """
        name: a
        image: Registry.example.com/Team/App:latest
        processes: {web: {}}
     """, ["app.yaml:2: image:"]),
    ("build paths escaping or absolute", """
        name: a
        build:
          context: ../elsewhere
          dockerfile: /etc/Dockerfile
        processes: {web: {}}
     """, ["app.yaml:3: build.context:", "app.yaml:4: build.dockerfile:"]),
    ("no processes", """
        name: a
        image: nginx
        processes: {}
     """, ["app.yaml:3: processes:"]),
    ("processes is a list", """
        name: a
        image: nginx
        processes:
          - web
     """, ["app.yaml:4: processes:"]),
    ("bad process name", """
        name: a
        image: nginx
        processes:
          Web_1: {}
          this-name-is-much-too-long: {}
     """, ["app.yaml:4: processes.Web_1:", "app.yaml:5: processes.this-name-is-much-too-long:"]),
    ("command is a string", """
        name: a
        image: nginx
        processes:
          web: {command: python3 app.py}
     """, ["app.yaml:4: processes.web.command:"]),
    ("command empty and with a non-string", """
        name: a
        image: nginx
        processes:
          web: {command: []}
          worker:
            command:
              - sleep
              - 10
     """, ["app.yaml:4: processes.web.command:", "app.yaml:8: processes.worker.command[1]:"]),
    ("replicas out of range and of the wrong types", """
        name: a
        image: nginx
        processes:
          a: {replicas: 101}
          b: {replicas: -1}
          c: {replicas: true}
          d: {replicas: "3"}
          e: {replicas: 1.5}
     """, [f"app.yaml:{n}: processes.{p}.replicas:" for n, p in zip(range(4, 9), "abcde", strict=True)]),
    ("ports", """
        name: a
        image: nginx
        processes:
          a: {port: 0}
          b: {port: 65536}
          c: {port: http}
     """, ["app.yaml:4: processes.a.port:", "app.yaml:5: processes.b.port:", "app.yaml:6: processes.c.port:"]),
    ("health without a port", """
        name: a
        image: nginx
        processes:
          worker:
            health: {path: /}
     """, ["app.yaml:5: processes.worker.health:"]),
    ("health fields", """
        name: a
        image: nginx
        processes:
          web:
            port: 80
            health:
              path: healthz
              interval: 301s
              timeout: 0.05s
              healthy_after: 0
              unhealthy_after: 21
     """, ["app.yaml:7: processes.web.health.path:", "app.yaml:8: processes.web.health.interval:",
           "app.yaml:9: processes.web.health.timeout:", "app.yaml:10: processes.web.health.healthy_after:",
           "app.yaml:11: processes.web.health.unhealthy_after:"]),
    ("health path with unsafe characters", """
        name: a
        image: nginx
        processes:
          a: {port: 80, health: {path: "/a b"}}
          b: {port: 80, health: {path: "/{x}"}}
          c: {port: 80, health: {path: "/a\\nb"}}
          d: {port: 80, health: {path: "/'"}}
     """, [f"app.yaml:{n}: processes.{p}.health.path:" for n, p in zip(range(4, 8), "abcd", strict=True)]),
    ("health timeout longer than interval", """
        name: a
        image: nginx
        processes:
          web:
            port: 80
            health: {interval: 1s, timeout: 2s}
     """, ["app.yaml:6: processes.web.health.timeout:"]),
    ("bad durations", """
        name: a
        image: nginx
        processes:
          web:
            port: 80
            health:
              interval: 2 seconds
              timeout: true
     """, ["app.yaml:7: processes.web.health.interval:", "app.yaml:8: processes.web.health.timeout:"]),
    ("resources", """
        name: a
        image: nginx
        processes:
          a: {resources: {cpu: 0, memory: 1Mi}}
          b: {resources: {cpu: 65, memory: 65Gi}}
          c: {resources: {cpu: lots, memory: 12 parsecs}}
     """, ["app.yaml:4: processes.a.resources.cpu:", "app.yaml:4: processes.a.resources.memory:",
           "app.yaml:5: processes.b.resources.cpu:", "app.yaml:5: processes.b.resources.memory:",
           "app.yaml:6: processes.c.resources.cpu:", "app.yaml:6: processes.c.resources.memory:"]),
    ("env", """
        name: a
        image: nginx
        processes: {web: {}}
        env:
          1ST: x
          PAAS_APP: x
          paas_lower: x
          NOTHING: null
          LIST: [a]
          NUL: "a\\0b"
     """, ["app.yaml:5: env.1ST:", "app.yaml:6: env.PAAS_APP:", "app.yaml:7: env.paas_lower:",
           "app.yaml:8: env.NOTHING:", "app.yaml:9: env.LIST:", "app.yaml:10: env.NUL:"]),
    ("env value too long", f"""
        name: a
        image: nginx
        processes: {{web: {{}}}}
        env: {{BIG: {'x' * (32 * 1024 + 1)}}}
     """, ["app.yaml:4: env.BIG:"]),
    ("domains", """
        name: a
        image: nginx
        processes: {web: {}}
        domains:
          - Example.com
          - "*.example.com"
          - localhost
          - -bad.example.com
          - 10.0.0.1
          - ok.example.com
          - ok.example.com
          - 42
     """, ["app.yaml:5: domains[0]:", "app.yaml:6: domains[1]:", "app.yaml:7: domains[2]:",
           "app.yaml:8: domains[3]:", "app.yaml:9: domains[4]:", "app.yaml:11: domains[6]:",
           "app.yaml:12: domains[7]:"]),
    ("too many domains", "name: a\nimage: nginx\nprocesses: {web: {}}\ndomains:\n"
     + "".join(f"  - d{i}.example.com\n" for i in range(21)), ["app.yaml:5: domains:"]),
    ("node labels", """
        name: a
        image: nginx
        processes: {web: {}}
        constraints:
          node_labels:
            "bad key": x
            disk: "s s d"
     """, ["app.yaml:6: constraints.node_labels.bad key:", "app.yaml:7: constraints.node_labels.disk:"]),
    ("rollout", """
        name: a
        image: nginx
        processes: {web: {}}
        rollout:
          max_surge: 0
          max_unavailable: 0
     """, ["app.yaml:5: rollout:"]),
    ("rollout negative", """
        name: a
        image: nginx
        processes: {web: {}}
        rollout: {max_surge: -1}
     """, ["app.yaml:4: rollout.max_surge:"]),
    ("wrong types of whole groups", """
        name: [a]
        image: {repo: nginx}
        processes: {web: []}
        env: [A=1]
        domains: example.com
        constraints: []
        rollout: fast
     """, ["app.yaml:1: name:", "app.yaml:2: image:", "app.yaml:3: processes.web:", "app.yaml:4: env:",
           "app.yaml:5: domains:", "app.yaml:6: constraints:", "app.yaml:7: rollout:"]),
    ("unknown fields at every level", """
        name: a
        image: nginx
        proceses: {}
        processes:
          web:
            replica: 2
            health: {pth: /}
            port: 80
            resources: {mem: 1Gi}
        rollout: {surge: 1}
        constraints: {labels: {}}
     """, ["app.yaml:3: proceses:", "app.yaml:6: processes.web.replica:", "app.yaml:7: processes.web.health.pth:",
           "app.yaml:9: processes.web.resources.mem:", "app.yaml:10: rollout.surge:",
           "app.yaml:11: constraints.labels:"]),
    ("explicit YAML tags that do not fit", """
        name: !!binary aGVsbG8=
        image: nginx
        processes: {web: {replicas: !!int abc}}
     """, ["app.yaml:1: name:", "app.yaml:3: processes.web.replicas:"]),
]


@pytest.mark.parametrize("text, expected", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_spec(text: str, expected: list[str]) -> None:
    assert prefixes(text) == expected


def test_every_problem_is_reported_at_once_in_line_order() -> None:
    found = problems("""
        name: Bad_Name
        image: nginx
        processes:
          web:
            command: python3 -m http.server
            replicas: "3"
            port: 70000
            helth: {path: /}
        env: {PAAS_X: "1", GOOD: ok}
        domains: [a.example.com, a.example.com]
        rollout: {max_surge: 0, max_unavailable: 0}
     """, "hello/app.yaml")
    assert [str(p) for p in found] == [
        "hello/app.yaml:1: name: invalid value 'Bad_Name': app names are 1-40 characters of a-z, 0-9 and '-', "
        "start with a letter and do not end with '-'",
        "hello/app.yaml:5: processes.web.command: expected a list of strings, got string "
        "'python3 -m http.server'; write it as a list: [\"python3\", \"-m\", \"http.server\"]",
        "hello/app.yaml:6: processes.web.replicas: expected an integer, got string '3'",
        "hello/app.yaml:7: processes.web.port: must be between 1 and 65535, got 70000",
        "hello/app.yaml:8: processes.web.helth: unknown field 'helth'; did you mean 'health'?",
        "hello/app.yaml:9: env.PAAS_X: names starting with PAAS_ are reserved for the platform",
        "hello/app.yaml:10: domains[1]: duplicate domain 'a.example.com' (first at line 10)",
        "hello/app.yaml:11: rollout: max_surge and max_unavailable cannot both be 0: "
        "the rollout could never progress",
    ]


def test_spec_error_str_is_all_problems_one_per_line() -> None:
    with pytest.raises(SpecError) as excinfo:
        parse_spec("name: A\nprocesses: {}\n", "x.yaml")
    err = excinfo.value
    assert str(err) == "\n".join(str(p) for p in err.problems)
    assert [p[:3] for p in err.problems] == [("x.yaml", 1, "build"), ("x.yaml", 1, "name"),
                                             ("x.yaml", 2, "processes")]


def test_problem_str_format() -> None:
    assert str(SpecProblem("app.yaml", 7, "processes.web.port", "boom")) == "app.yaml:7: processes.web.port: boom"


@pytest.mark.parametrize("text, message", [
    ("name: 3\n", "expected a string, got integer 3"),
    ("name: a\nimage: nginx\nprocesses: {web: {replicas: '3'}}\n", "expected an integer, got string '3'"),
    ("name: a\nimage: nginx\nprocesses: {web: {replicas: yes}}\n", "expected an integer, got boolean yes"),
    ("name: a\nimage: nginx\nprocesses: {web: {port: 80.0}}\n", "expected an integer, got number 80.0"),
    ("name: a\nimage: nginx\nprocesses: {web: {port: }}\n", "expected an integer, got null"),
    ("name: a\nimage: nginx\nprocesses: {web: {command: x}}\n", "write it as a list"),
    ("name: a\nimage: nginx\nprocesses: {web: {resources: {memory: 1Mi}}}\n", "must be between 4Mi and 64Gi, got 1Mi"),
    ("name: a\nimage: nginx\nprocesses: {web: {helth: {}}}\n", "unknown field 'helth'; did you mean 'health'?"),
    ("name: a\nimage: nginx\nprocesses: {web: {zzz: 1}}\n", "unknown field 'zzz'; expected one of: command,"),
    ("nmae: a\nimage: nginx\nprocesses: {web: {}}\n", "unknown field 'nmae'; did you mean 'name'?"),
    ("name: a\nbuild: {contxt: .}\nprocesses: {web: {}}\n", "did you mean 'context'?"),
])
def test_messages_say_what_was_expected_and_what_was_given(text: str, message: str) -> None:
    assert any(message in p.message for p in problems(text)), [p.message for p in problems(text)]


# -- YAML-level problems ------------------------------------------------------------------------

def test_duplicate_keys_name_both_lines() -> None:
    found = problems("""
        name: a
        image: nginx
        processes:
          web: {port: 80}
          web: {port: 81}
        name: b
     """)
    assert [f"{p.line}: {p.field}: {p.message}" for p in found] == [
        "5: processes.web: duplicate key 'web' (lines 4 and 5); remove one",
        "6: name: duplicate key 'name' (lines 1 and 6); remove one",
    ]


def test_aliases_and_anchors_are_refused() -> None:
    found = problems("""
        name: a
        image: nginx
        processes:
          web: &proc {port: 80}
          api: *proc
     """)
    assert [(p.line, p.field, p.message) for p in found] == [
        (4, "processes.web", "YAML anchors and aliases are not allowed"),
        (5, "processes.api", "YAML anchors and aliases are not allowed"),
    ]


def test_billion_laughs_is_refused_without_expanding() -> None:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    lines += ["name: a", "image: nginx", "processes: {web: {command: *a9}}"]
    found = problems("\n".join(lines))
    refused = [(p.line, p.field) for p in found if p.message == "YAML anchors and aliases are not allowed"]
    assert refused == [(i + 1, f"a{i}") for i in range(10)] + [(13, "processes.web.command")]


def test_merge_keys_are_refused() -> None:
    found = problems("""
        base: &base {replicas: 2}
        name: a
        image: nginx
        processes:
          web:
            <<: *base
     """)
    assert "app.yaml:6: processes.web.<<:" in [f"{p.file}:{p.line}: {p.field}:" for p in found]


def test_too_many_nodes() -> None:
    text = "name: a\nimage: nginx\nprocesses: {web: {}}\ndomains: [" + ", ".join(["x"] * 10_001) + "]\n"
    assert len(text) < MAX_SPEC_BYTES
    (problem,) = problems(text)
    assert (problem.line, problem.field) == (4, "(document)")
    assert "too complex" in problem.message


def test_too_deep() -> None:
    (problem,) = problems("name: " + "[" * 200 + "]" * 200 + "\n")
    assert problem.field == "(document)" and "too deep" in problem.message


@pytest.mark.parametrize("text, line, fragment", [
    ("name: a\nprocesses:\n  web: {port: 80\n", 4, "invalid YAML"),
    ("name: a\n  image: nginx\n", 2, "invalid YAML"),
    ("name: 'a\n", 2, "invalid YAML"),
    ("name: a\n---\nname: b\n", 2, "expected a single document"),
    ("name: a\x00\n", 1, "invalid YAML"),
    ("", 1, "got an empty document"),
    ("# only a comment\n", 1, "got an empty document"),
    ("- name: a\n", 1, "the spec must be a mapping"),
    ("just a string\n", 1, "got string 'just a string'"),
])
def test_document_problems(text: str, line: int, fragment: str) -> None:
    (problem,) = problems(text)
    assert (problem.file, problem.line, problem.field) == ("app.yaml", line, "(document)")
    assert fragment in problem.message


def test_unsafe_tags_are_never_constructed() -> None:
    found = problems("name: !!python/object/apply:os.system ['true']\nimage: nginx\nprocesses: {web: {}}\n")
    assert [(p.line, p.field) for p in found] == [(1, "name")]


def test_size_limit() -> None:
    text = "name: a\nimage: nginx\nprocesses: {web: {}}\n"
    padded = text + "#" * (MAX_SPEC_BYTES - len(text) - 1) + "\n"
    assert parse_spec(padded).name == "a"
    (problem,) = problems(padded + "#")
    assert (problem.line, problem.field) == (1, "(document)")
    assert str(MAX_SPEC_BYTES) in problem.message


# -- load_spec_file -----------------------------------------------------------------------------

def test_load_spec_file_reads_and_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text("name: a\nimage: nginx\nprocesses: {web: {replicas: x}}\n")
    with pytest.raises(SpecError) as excinfo:
        load_spec_file(str(path))
    assert str(excinfo.value).startswith(f"{path}:3: processes.web.replicas: expected an integer")


def test_load_spec_file_refuses_big_files_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * (MAX_SPEC_BYTES + 1))
    with pytest.raises(SpecError) as excinfo:
        load_spec_file(str(path))
    assert [(p.file, p.line, p.field) for p in excinfo.value.problems] == [(str(path), 1, "(document)")]


def test_load_spec_file_refuses_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: a\nimage: caf\xe9\n")
    with pytest.raises(SpecError) as excinfo:
        load_spec_file(str(path))
    assert [(p.line, p.field) for p in excinfo.value.problems] == [(2, "(document)")]


def test_load_spec_file_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_spec_file(str(tmp_path / "nope.yaml"))


# -- helpers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("given, seconds", [
    ("2s", 2.0), ("500ms", 0.5), ("1m", 60.0), ("1h", 3600.0), ("1.5s", 1.5), ("3", 3.0), (2, 2.0), (0.25, 0.25),
])
def test_parse_duration(given: Any, seconds: float) -> None:
    assert parse_duration(given) == seconds


@pytest.mark.parametrize("given", ["", "2 seconds", "-1s", "1d", "s", True, None, [1]])
def test_parse_duration_refuses(given: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(given)


@pytest.mark.parametrize("given, size", [
    ("128Mi", 128 * MiB), ("1Gi", GiB), ("64Ki", 65536), ("512M", 512_000_000), ("64k", 64_000),
    ("2G", 2_000_000_000), ("1.5Gi", 3 * GiB // 2), ("1048576", MiB), (4096, 4096),
])
def test_parse_memory(given: Any, size: int) -> None:
    assert parse_memory(given) == size


@pytest.mark.parametrize("given", ["", "12 parsecs", "-1Mi", "1MiB", "Mi", False, None, 1.5])
def test_parse_memory_refuses(given: Any) -> None:
    with pytest.raises(ValueError):
        parse_memory(given)
