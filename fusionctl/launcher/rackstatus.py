"""`fusionctl rack status`: what a rack up from a state directory runs, checked live (each
process running, each server answering, the controller reaching every tray, each active fault
and the links it holds down, links down that nothing explains), as a document
(`status_document`, which `rack up -o json` prints too) or a table."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fusionrack.emulator import Topology
from fusionrack.v1 import common_pb2, controller_pb2

from ..lookup import no_rack
from ..output import Palette, Word, colour_enabled, print_json, table
from ..statedir import RackState
from .plan import controller_addresses, controller_names, recorded_plan, recorded_rack
from .processes import BROKER, running
from .prometheus import prometheus_answers
from .readiness import answers_tcp, get_domain, link_problems, tray_status

__all__ = ["rack_status", "status_document"]


async def status_document(topology: Topology, state_dir: Path) -> dict[str, Any]:
    """What `rack status -o json` prints: from the state directory, checked live.

    `{"rack", "state_dir", "up", "healthy", "controller": {"address", "pid", "running",
    "answers", "control_plane_state", "reachable_trays", "trays"} | null, "controllers":
    [{"name", "address", "pid", "running", "answers", "leads", "control_plane_state",
    "reachable_trays", "trays"}] (one per controller; with several, `rack up --controllers N`,
    "controller" is the leader's, but its address: every one, "A,B,C"), "store": {"url", "pid",
    "running", "answers"} | null (their etcd), "broker": {"url",
    "pid", "running", "answers"} | null, "prometheus": {"url", "pid", "running", "answers"} |
    null, "trays": [{"name", "kind", "slot", "address", "metrics_address", "pid", "running",
    "answers", "active_links", "links", "state", "faults"}], "problems": [str], "notes":
    [str]}`; a tray's `state`: "ok", "failed" (lost: a tray_loss fault), null when silent;
    `faults`: the ids of those active on it. `problems` says in sentences what is wrong: a
    process stopped or silent, a controller that does not reach every tray, each active fault
    and the links it holds down, links down that nothing explains; `notes` what is down on
    purpose (drained links). `healthy`: no problem.
    """
    state = RackState(state_dir)
    pids, record, tray_pids = state.pids(), state.record() or {}, state.tray_pids()
    shared = record.get("shared_pids", {})  # a fleet's broker and Prometheus
    up = bool(pids)
    document: dict[str, Any] = {
        "rack": topology.name, "state_dir": str(state_dir), "up": up, "healthy": False,
        "controller": None, "controllers": [], "store": None, "broker": None, "prometheus": None,
        "trays": [], "problems": [], "notes": [],
    }  # fmt: skip
    if not up:
        return document
    plan = recorded_plan(topology, record, state_dir)
    statuses = await asyncio.gather(
        *(tray_status(plan.grpc_address(t.name), plan.client_tls) for t in topology.trays)
    )
    for tray, status in zip(topology.trays, statuses, strict=True):
        pid = tray_pids.get(tray.name, pids.get("agents"))
        document["trays"].append({
            "name": tray.name, "kind": tray.kind.name.lower(), "slot": tray.slot,
            "address": plan.grpc_address(tray.name),
            "metrics_address": plan.metrics_address(tray.name),
            "pid": pid, "running": running(pid), "answers": status is not None,
            "active_links": status.active_link_count if status else 0,
            "links": status.link_count if status else 0,
            "state": common_pb2.ComponentState.Name(status.state).removeprefix(
                "COMPONENT_STATE_").lower() if status else None,
            "faults": [fault.id for fault in status.faults] if status else [],
        })  # fmt: skip
    parts = list(document["trays"])
    addresses = controller_addresses(record.get("controller"))
    domains = await asyncio.gather(*(get_domain(a, plan.client_tls) for a in addresses))
    for name, address, domain in zip(controller_names(record.get("controller")), addresses,
                                     domains, strict=True):  # fmt: skip
        pid = pids.get(name)
        state = domain.state if domain else None
        document["controllers"].append({
            "name": name, "address": address, "pid": pid, "running": running(pid),
            "answers": domain is not None,
            "leads": bool(state and state.leadership.leader),
            "control_plane_state": controller_pb2.ControlPlaneState.Name(
                state.control_plane_state).removeprefix("CONTROL_PLANE_STATE_").lower()
            if state else None,
            "reachable_trays": state.reachable_tray_count if state else 0,
            "trays": state.tray_count if state else 0,
        })  # fmt: skip
    parts += document["controllers"]
    if document["controllers"]:
        each = document["controllers"]
        # The rack's controller: the leader, else one that answers, else the first.
        rack = min(each, key=lambda c: (not c["leads"], not c["answers"]))
        document["controller"] = {**rack, "address": record["controller"]}
        del document["controller"]["name"], document["controller"]["leads"]
    if record.get("store"):
        host, port = record["store"].removeprefix("etcd://").rsplit(":", 1)
        pid = pids.get("etcd")
        document["store"] = {"url": record["store"], "pid": pid, "running": running(pid),
                             "answers": answers_tcp(host, int(port))}  # fmt: skip
        parts.append(document["store"])
    if record.get("mqtt"):
        host, port = record["mqtt"].removeprefix("mqtt://").rsplit(":", 1)
        pid = pids.get(BROKER, shared.get(BROKER))
        document["broker"] = {"url": record["mqtt"], "pid": pid, "running": running(pid),
                              "answers": answers_tcp(host, int(port))}  # fmt: skip
        parts.append(document["broker"])
    if record.get("prometheus"):
        pid = pids.get("prometheus", shared.get("prometheus"))
        answers = await asyncio.to_thread(prometheus_answers, record["prometheus"])
        document["prometheus"] = {"url": record["prometheus"], "pid": pid,
                                  "running": running(pid), "answers": answers}  # fmt: skip
        parts.append(document["prometheus"])
    problems = document["problems"]
    for part in parts:
        name = part.get("name") or _SERVICE_NAMES[_service_of(document, part)]
        if not part["running"]:
            problems.append(f"{name}: its process is not running")
        elif not part["answers"]:
            problems.append(f"{name} does not answer")
        elif part in document["controllers"] and part["reachable_trays"] < part["trays"]:
            problems.append(f"{name} reaches {part['reachable_trays']} of {part['trays']} trays")
    links, document["notes"] = link_problems(
        topology, {t.name: s for t, s in zip(topology.trays, statuses, strict=True)}
    )
    problems += links
    document["healthy"] = not problems
    return document


_SERVICE_NAMES = {"store": "etcd", "broker": "mosquitto", "prometheus": "prometheus"}


def _service_of(document: dict[str, Any], part: dict[str, Any]) -> str:
    """Which of the rack's services (store, broker, prometheus) `part` is."""
    return next(key for key in _SERVICE_NAMES if document[key] is part)


def _status_table(document: dict[str, Any]) -> str:
    paint = Palette(colour_enabled())

    def process(part: dict[str, Any]) -> Word:
        return Word("running" if part["running"] else "stopped")

    rows = []
    broker, monitor = document["broker"], document["prometheus"]
    several = len(document["controllers"]) > 1
    for controller in document["controllers"]:
        state = (
            f"{controller['control_plane_state']}, {controller['reachable_trays']}/"
            f"{controller['trays']} trays reachable" if controller["answers"] else "silent"
        )  # fmt: skip
        if several and controller["answers"]:
            state = ("leader, " if controller["leads"] else "standby, ") + state
        rows.append((controller["name"], "controller", controller["pid"], process(controller),
                     controller["address"], Word(state)))  # fmt: skip
    if document["store"]:
        store = document["store"]
        rows.append(("etcd", "store", store["pid"], process(store), store["url"],
                     Word("answers" if store["answers"] else "silent")))  # fmt: skip
    if broker:
        rows.append(("mosquitto", "broker", broker["pid"], process(broker), broker["url"],
                     Word("answers" if broker["answers"] else "silent")))  # fmt: skip
    if monitor:
        rows.append(("prometheus", "prometheus", monitor["pid"], process(monitor), monitor["url"],
                     Word("answers" if monitor["answers"] else "silent")))  # fmt: skip
    for t in document["trays"]:
        state = f"{t['active_links']}/{t['links']} links active" if t["answers"] else "silent"
        if t["state"] == "failed":
            state += ", lost"
        rows.append((t["name"], t["kind"], t["pid"], process(t), t["address"],
                     Word(state) if not t["answers"] else state))  # fmt: skip
    verdict = paint("healthy") if document["healthy"] else paint("degraded")
    head = f"rack {document['rack']} (state in {document['state_dir']}): {verdict}"
    lines = [head, table(rows, ("NAME", "KIND", "PID", "PROCESS", "ADDRESS", "STATE"), paint)]
    lines += [f"- {problem}" for problem in document["problems"]]
    lines += [f"  ({note})" for note in document["notes"]]
    if any("fault" in problem for problem in document["problems"]):
        lines.append("  (fusionctl fault list; a fault ends with `fusionctl fault clear ID` or "
                     "when its tray restarts)")  # fmt: skip
    return "\n".join(lines)


def rack_status(
    manifest: str | None = None, state_dir: Path | None = None, output: str = "table"
) -> int:
    """Print what runs, from the state directory plus a live check; 0 when all is well."""
    topology, state_dir = recorded_rack(manifest, state_dir)
    document = asyncio.run(status_document(topology, state_dir))
    if output == "json":
        print_json(document)
    elif not document["up"]:
        print(no_rack(state_dir))
    else:
        print(_status_table(document))
    return 0 if document["healthy"] else 1
