"""Tables for the pure planner (apps + nodes + assignments -> Plan), the agent's
container sync, health bookkeeping and the nginx rendering."""
from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from agent import sync
from agent.health import HealthState, ProbeResult, after_probe
from agent.router import build_routes, render_nginx_config
from controller.reconcile import Observed, Release, plan_assignments
from paas.model import AppSpec, Assignment, Health, Node, Process, Resources, Rollout

MiB = 1024 * 1024


def spec(name="web", replicas=3, port=8000, memory=64 * MiB, labels=None, processes=None):
    procs = processes or {"web": Process(name="web", command=("run",), replicas=replicas, port=port,
                                         health=Health() if port else None,
                                         resources=Resources(cpu=0.1, memory=memory))}
    return AppSpec(name=name, processes=procs, image="img:1", node_labels=labels or {})


def release(app_spec, number=1, env=None):
    return Release(app=app_spec.name, number=number, image=f"img:{number}", spec=app_spec, env=env or {})


def nodes(*names, memory=1024 * MiB, labels=None):
    return {n: Node(name=n, address=f"127.0.0.{i + 11}", cpu=2, memory=memory, labels=labels or {})
            for i, n in enumerate(names)}


def counter():
    c = itertools.count()
    return lambda: f"{next(c):04x}"


def seen(available, routed=None):
    """Agents and routers report these replicas available (healthy and routed)."""
    return Observed(available=frozenset(available), routed=frozenset(available if routed is None else routed))


def apply(plan, current):
    gone = {a.id for a in plan.delete} | {a.id for a in plan.drain}
    return [a for a in current if a.id not in gone] + list(plan.drain) + list(plan.create)


def test_new_app_gets_one_replica_per_node():
    plan = plan_assignments({"web": release(spec())}, nodes("n1", "n2", "n3"), [], seen(set()), 0.0, counter())
    assert sorted(a.node for a in plan.create) == ["n1", "n2", "n3"]
    assert sorted(a.index for a in plan.create) == [0, 1, 2]
    a = plan.create[0]
    assert a.id.startswith("web.web.1.") and a.image == "img:1" and a.port == 8000 and a.health == Health()
    assert plan.delete == () and plan.pending == {}


def test_converged_state_plans_nothing():
    rels, ns = {"web": release(spec())}, nodes("n1", "n2", "n3")
    current = apply(plan_assignments(rels, ns, [], seen(set()), 0.0, counter()), [])
    again = plan_assignments(rels, ns, current, seen({a.id for a in current}), 0.0, counter())
    assert again.empty


def test_replicas_of_a_lost_node_are_placed_again_elsewhere():
    rels = {"web": release(spec())}
    current = apply(plan_assignments(rels, nodes("n1", "n2", "n3"), [], seen(set()), 0.0, counter()), [])
    lost = next(a for a in current if a.node == "n2")
    plan = plan_assignments(rels, nodes("n1", "n3"), current, seen({a.id for a in current}), 0.0, counter())
    assert [a.id for a in plan.delete] == [lost.id]
    assert [(a.index, a.node in {"n1", "n3"}) for a in plan.create] == [(lost.index, True)]


def test_deleted_app_loses_every_assignment():
    current = apply(plan_assignments({"web": release(spec())}, nodes("n1"), [], seen(set()), 0.0, counter()), [])
    plan = plan_assignments({}, nodes("n1"), current, seen(set()), 0.0, counter())
    assert {a.id for a in plan.delete} == {a.id for a in current}


class World:
    """Agents and a router played by hand: a new replica is available one pass after
    it is created; a draining one leaves the router one pass after it starts draining."""

    def __init__(self, rels, ns, current=()):
        self.rels, self.ns, self.now, self.ids = rels, ns, 0.0, counter()
        self.assignments = list(current)
        self.available = {a.id for a in current}
        self.routed = {a.id for a in current if a.port}
        self.history = []

    def step(self, scale=None):
        # what happened since the last pass: new replicas got healthy and routed,
        # draining ones left the router
        draining = {a.id for a in self.assignments if a.draining_since is not None}
        self.available = {a.id for a in self.assignments if a.id not in draining}
        self.routed = {a.id for a in self.assignments if a.port and a.id not in draining}
        plan = plan_assignments(self.rels, self.ns, self.assignments, seen(self.available, self.routed),
                                self.now, self.ids, scale=scale)
        self.assignments = apply(plan, self.assignments)
        self.available -= {a.id for a in plan.delete} | {a.id for a in plan.drain}
        self.now += 10.0                            # past every drain grace
        serving = [a for a in self.assignments if a.id in self.available and a.draining_since is None]
        running = [a for a in self.assignments if a.draining_since is None]
        self.history.append((len(serving), len(running)))
        return plan

    def run(self, passes=20, **kw):
        for _ in range(passes):
            if self.step(**kw).empty:
                break
        return self


def test_rolling_update_keeps_n_available_and_at_most_n_plus_surge_running():
    ns = nodes("n1", "n2", "n3")
    v1 = World({"web": release(spec(), 1)}, ns).run().assignments
    world = World({"web": release(spec(), 2)}, ns, v1).run()
    assert sorted((a.release, a.index) for a in world.assignments) == [(2, 0), (2, 1), (2, 2)]
    assert all(serving >= 3 and running <= 4 for serving, running in world.history[:-1]), world.history
    # each new replica lands where an old one leaves: no move is needed afterwards
    assert sorted(a.node for a in world.assignments) == ["n1", "n2", "n3"] and len(world.history) <= 8


def test_max_unavailable_without_surge_never_runs_more_than_n():
    ns = nodes("n1", "n2", "n3")
    rolled = replace(spec(), rollout=Rollout(max_surge=0, max_unavailable=1))
    v1 = World({"web": release(rolled, 1)}, ns).run().assignments
    world = World({"web": release(rolled, 2)}, ns, v1).run()
    assert sorted(a.release for a in world.assignments) == [2, 2, 2]
    assert all(serving >= 2 and running <= 3 for serving, running in world.history), world.history


def test_a_new_release_that_never_gets_healthy_leaves_the_old_serving():
    ns = nodes("n1", "n2", "n3")
    v1 = World({"web": release(spec(), 1)}, ns).run().assignments
    v2 = release(spec(), 2)
    plan = plan_assignments({"web": v2}, ns, v1, seen({a.id for a in v1}), 0.0, counter())
    stuck = apply(plan, v1)
    again = plan_assignments({"web": v2}, ns, stuck, seen({a.id for a in v1}), 5.0, counter())
    assert again.empty                      # one surge replica, not available: nothing drains
    assert [a.release for a in stuck].count(1) == 3


def test_draining_leaves_the_router_before_the_replica_is_deleted():
    ns = nodes("n1", "n2", "n3")
    current = World({"web": release(spec(replicas=3), 1)}, ns).run().assignments
    rels = {"web": release(spec(replicas=1), 1)}
    plan = plan_assignments(rels, ns, current, seen({a.id for a in current}), 100.0, counter())
    assert sorted(a.index for a in plan.drain) == [1, 2] and plan.delete == ()
    assert all(a.draining_since == 100.0 for a in plan.drain)
    after = apply(plan, current)
    still_routed = plan_assignments(rels, ns, after, seen({a.id for a in current}), 200.0, counter())
    assert still_routed.empty               # a router still sends to them: wait
    grace = plan_assignments(rels, ns, after, seen({current[0].id}, routed=set()), 102.0, counter())
    assert grace.empty                      # out of the router, but the 5 s drain grace is not over
    done = plan_assignments(rels, ns, after, seen({current[0].id}, routed=set()), 105.0, counter())
    assert sorted(a.index for a in done.delete) == [1, 2]


def test_scale_overrides_the_spec_count_without_a_new_release():
    ns = nodes("n1", "n2", "n3")
    world = World({"web": release(spec(replicas=2), 1)}, ns).run(scale={"web": {"web": 5}})
    assert sorted(a.index for a in world.assignments) == [0, 1, 2, 3, 4]
    assert {a.release for a in world.assignments} == {1}


def test_old_workers_stop_without_draining():
    ns = nodes("n1")
    worker = {"worker": Process(name="worker", command=("w",), replicas=1)}
    v1 = World({"jobs": release(spec(name="jobs", processes=worker), 1)}, ns).run().assignments
    plan = plan_assignments({"jobs": release(spec(name="jobs", processes=worker), 2)}, ns, v1,
                            seen({a.id for a in v1}), 0.0, counter())
    assert plan.drain == () and len(plan.create) == 1
    world = World({"jobs": release(spec(name="jobs", processes=worker), 2)}, ns, v1).run()
    assert [a.release for a in world.assignments] == [2]


def test_env_of_the_release_reaches_the_assignment():
    plan = plan_assignments({"web": release(spec(replicas=1), env={"A": "1"})}, nodes("n1"), [], seen(set()), 0.0, counter())
    assert plan.create[0].env == {"A": "1"}


def test_unplaceable_replicas_are_pending_with_the_reason():
    plan = plan_assignments({"big": release(spec(name="big", replicas=2, memory=4096 * MiB))},
                            nodes("n1", "n2"), [], seen(set()), 0.0, counter())
    assert plan.create == ()
    assert set(plan.pending["big"]) == {"big.web.0", "big.web.1"}
    assert all("insufficient memory" in r for r in plan.pending["big"].values())


def test_label_constraints_pick_matching_nodes():
    ns = {**nodes("n1", "n2"), **nodes("ssd1", labels={"disk": "ssd"})}
    plan = plan_assignments({"db": release(spec(name="db", replicas=2, labels={"disk": "ssd"}))},
                            ns, [], seen(set()), 0.0, counter())
    assert [a.node for a in plan.create] == ["ssd1", "ssd1"]


# -- agent: container sync ---------------------------------------------------------------

def assignment(rid, port=8000):
    return Assignment(id=rid, app="a", process="web", release=1, index=0, node="n1", image="img",
                      command=None, env={}, port=port, health=Health() if port else None,
                      resources=Resources())


@pytest.mark.parametrize("containers, restarts, now, expected", [
    ([], {}, 0, [("Create", "r1")]),
    ([sync.ContainerView("c1", "r1", "running")], {}, 0, []),
    ([sync.ContainerView("c1", "r1", "exited")], {}, 0, [("Restart", "r1")]),
    ([sync.ContainerView("c1", "r1", "exited")], {"r1": sync.RestartState(2, 10.0)}, 5.0, []),
    ([sync.ContainerView("c1", "r1", "exited")], {"r1": sync.RestartState(2, 10.0)}, 10.0, [("Restart", "r1")]),
    ([sync.ContainerView("c1", "r1", "running"), sync.ContainerView("c0", "r1", "exited")], {}, 0,
     [("Remove", "r1")]),
    ([sync.ContainerView("c1", "r1", "running"), sync.ContainerView("c9", "old", "running")], {}, 0,
     [("Remove", "old")]),
])
def test_plan_sync(containers, restarts, now, expected):
    actions = sync.plan_sync({"r1": assignment("r1")}, containers, restarts, now)
    got = [(type(a).__name__, a.assignment.id if isinstance(a, sync.Create) else a.replica) for a in actions]
    assert got == expected


def test_duplicate_keeps_the_running_container():
    actions = sync.plan_sync({"r1": assignment("r1")}, [sync.ContainerView("b", "r1", "exited"),
                                                        sync.ContainerView("a", "r1", "running")], {}, 0)
    assert [(type(a).__name__, a.container_id) for a in actions] == [("Remove", "b")]


def test_restart_backoff_doubles_up_to_the_cap():
    state, delays = sync.RestartState(), []
    for _ in range(10):
        state = sync.after_restart(state, now=0.0, jitter=0.0, base=1.0, cap=30.0)
        delays.append(state.not_before)
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30, 30, 30]
    assert sync.is_crash_looping(state, now=1.0) and not sync.is_crash_looping(sync.RestartState(1, 5), 1.0)


def test_health_needs_healthy_after_successes_and_unhealthy_after_failures():
    h = Health(healthy_after=2, unhealthy_after=2)
    ok, bad = ProbeResult(True, 200, "", 0.01), ProbeResult(False, None, "refused", 0.01)
    s = after_probe(HealthState(), ok, h, 1)
    assert not s.healthy
    s = after_probe(s, ok, h, 2)
    assert s.healthy
    s = after_probe(s, bad, h, 3)
    assert s.healthy
    s = after_probe(s, bad, h, 4)
    assert not s.healthy and s.last.detail == "refused"


# -- router: nginx rendering ---------------------------------------------------------------

def app_value(name, domains=(), port=8000):
    return {"spec": spec(name=name, port=port).to_dict() | {"domains": list(domains)}, "release": 1}


def test_routes_take_healthy_endpoints_of_the_web_process_and_domains():
    eps = [{"app": "hello", "replica": "r2", "process": "web", "address": "127.0.0.12:3001"},
           {"app": "hello", "replica": "r1", "process": "web", "address": "127.0.0.11:3000"},
           {"app": "hello", "replica": "w", "process": "worker", "address": "127.0.0.11:3002"},
           {"app": "hello", "replica": "evil", "process": "web", "address": "1.2.3.4:80; include /etc"}]
    routes = build_routes([app_value("hello", ["hello.example.com"])], eps, "localhost")
    assert len(routes) == 1
    r = routes[0]
    assert r.hosts == ("hello.localhost", "hello.example.com")
    assert r.servers == ("127.0.0.11:3000", "127.0.0.12:3001") and r.replicas == ("r1", "r2")


def test_rendered_config_proxies_to_upstreams_and_503s_an_app_without_replicas():
    routes = build_routes([app_value("hello"), app_value("empty")],
                          [{"app": "hello", "replica": "r1", "process": "web", "address": "127.0.0.11:3000"}],
                          "localhost")
    text, generation = render_nginx_config(routes, "127.0.0.1:8080", "/tmp/r")
    assert "server 127.0.0.11:3000 max_fails=1" in text
    assert "server_name hello.localhost;" in text and "proxy_pass http://app_hello;" in text
    assert 'return 503 "no healthy replica of empty\\n";' in text
    assert f'return 200 "{generation}";' in text
    assert render_nginx_config(routes, "127.0.0.1:8080", "/tmp/r") == (text, generation)
    assert render_nginx_config(routes[:1], "127.0.0.1:8080", "/tmp/r")[1] != generation


def test_worker_only_apps_get_no_route():
    worker = {"worker": Process(name="worker", command=("w",), replicas=1)}
    assert build_routes([{"spec": spec(name="jobs", processes=worker).to_dict(), "release": 1}], [],
                        "localhost") == []


def test_draining_a_node_moves_its_replicas_one_at_a_time_health_gated():
    ns = nodes("n1", "n2", "n3")
    rels = {"web": release(spec(), 1)}
    placed = World(rels, ns).run().assignments
    drained = {**ns, "n2": replace(ns["n2"], draining=True)}
    world = World(rels, drained, placed).run()
    assert len(world.assignments) == 3 and "n2" not in {a.node for a in world.assignments}
    assert all(serving >= 3 and running <= 4 for serving, running in world.history), world.history


def test_a_returning_node_gets_replicas_back_gradually():
    ns = nodes("n1", "n2", "n3")
    rels = {"web": release(spec(), 1)}
    two_nodes = World(rels, {k: v for k, v in ns.items() if k != "n3"}).run().assignments
    assert sorted(a.node for a in two_nodes) == ["n1", "n1", "n2"]
    world = World(rels, ns, two_nodes).run()
    assert sorted(a.node for a in world.assignments) == ["n1", "n2", "n3"]
    assert all(serving >= 3 and running <= 4 for serving, running in world.history), world.history


def test_a_replica_crashing_on_its_node_is_placed_on_another():
    ns = nodes("n1", "n2")
    rels = {"web": release(spec(replicas=1), 1)}
    [a] = World(rels, ns).run().assignments
    plan = plan_assignments(rels, ns, [a], Observed(crashing=frozenset({a.id})), 0.0, counter())
    assert [d.id for d in plan.delete] == [a.id]
    assert [(c.index, c.node != a.node) for c in plan.create] == [(0, True)]


# -- rollout state machine -----------------------------------------------------------------

def test_rollout_is_done_when_every_new_replica_is_available_and_no_old_is_left():
    from controller import rollout as ro
    r = ro.start_rollout(2, 1, deadline=5, now=0)
    r = ro.rollout_step(r, ro.ReleaseObservation(desired=2, available=2, old_left=1), now=1)
    assert r["phase"] == ro.ROLLING
    r = ro.rollout_step(r, ro.ReleaseObservation(desired=2, available=2, old_left=1), now=30)
    assert r["phase"] == ro.ROLLING          # old ones still draining: not a stall
    assert ro.rollout_step(r, ro.ReleaseObservation(desired=2, available=2, old_left=0), now=31)["phase"] == ro.DONE


def test_rollout_without_progress_or_with_a_crash_rolls_back():
    from controller import rollout as ro
    r = ro.start_rollout(2, 1, deadline=5, now=0)
    stalled = ro.rollout_step(r, ro.ReleaseObservation(desired=2, available=0, old_left=2,
                                                       failing=[{"id": "x", "state": "running"}]), now=6)
    assert stalled["phase"] == ro.ROLLED_BACK and "no new replica became available for 5s" in stalled["reason"]
    crashed = ro.rollout_step(r, ro.ReleaseObservation(desired=2, available=0, old_left=2,
                                                       failing=[{"id": "x", "state": "crash-looping"}]), now=1)
    assert crashed["phase"] == ro.ROLLED_BACK and crashed["failing"][0]["id"] == "x"
    first = ro.rollout_step(ro.start_rollout(1, None, 5, 0), ro.ReleaseObservation(1, 0, 0), now=6)
    assert first["phase"] == ro.FAILED        # nothing to go back to
