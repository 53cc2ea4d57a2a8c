"""``chexdcm status [--spool DIR | --config FILE]``: the node's queue, states, last errors, throughput.

Reads the ledger (safe while the node runs: SQLite WAL readers never block it).
Prints PHI-free counts only: studies and deliveries per state, the queue depth, the
instances received in the last minute, turnaround percentiles, the input drift score
(combined, per part, alarm, window; :mod:`chexnet_dicom.node.drift_window`) and the last
events.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from chexnet_dicom.errors import EXIT_OK

__all__ = ["drift_line", "register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``status`` subcommand."""
    from chexnet_dicom.cli.listen import add_spool_options

    p = sub.add_parser("status", help="the listener node's queue, states, last errors and throughput")
    add_spool_options(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def drift_line(state: dict[str, Any] | None) -> str:
    """One line on input drift: the combined score, its parts, the alarm and the window."""
    if state is None:
        return "drift:      no state yet (no worker has started with drift monitoring)"
    if state.get("status") != "on":
        return f"drift:      {state.get('status', 'off')}"
    window = f"window {state['window']}/{state['window_size']}"
    score = state.get("score")
    if not score:
        return f"drift:      on, {window} (scored from {state['min_window']} images)"
    parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(score["parts"].items()))
    alarm = "no alarm"
    if score["alarm"]:
        since = (state.get("alarm_since") or {}).get("time")
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since)) if since else "?"
        alarm = f"ALARM since {when}"
    return f"drift:      combined {score['combined']:.2f} ({alarm}; threshold 1.00), {parts}; {window}"


def run(args: argparse.Namespace) -> int:
    """Print the ledger's summary; end quietly when the reader closes the pipe (``| head``)."""
    try:
        code = _run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        # Python's documented recipe: point stdout at devnull so the exit flush cannot fail
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from chexnet_dicom.cli.listen import spool_of
    from chexnet_dicom.node.ledger import NodeLedger

    ledger = NodeLedger(spool_of(args) / "ledger.sqlite")
    try:
        summary = ledger.summary()
        summary["drift"] = ledger.drift_state()
        events = ledger.events(10)
    finally:
        ledger.close()
    turnaround = summary.pop("turnaround_s")
    summary["turnaround"] = {
        "count": len(turnaround),
        "p50_s": _percentile(turnaround, 0.5),
        "p95_s": _percentile(turnaround, 0.95),
    }
    summary["last_events"] = [
        {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)), "kind": kind, "message": msg}
        for ts, kind, msg in events
    ]
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
        return EXIT_OK
    q = summary["queue"]
    print(f"queue: {q['studies_waiting']} studies waiting, {q['deliveries_waiting']} deliveries waiting")
    print("studies:    " + (", ".join(f"{k} {v}" for k, v in sorted(summary["studies"].items())) or "none"))
    print(
        "deliveries: " + (", ".join(f"{k} {v}" for k, v in sorted(summary["deliveries"].items())) or "none")
    )
    inst = summary["instances"]
    print("instances:  " + (", ".join(f"{k} {v['count']}" for k, v in sorted(inst.items())) or "none"))
    recent = summary["received_last_minute"]
    print(f"received in the last minute: {recent['count']} instances, {recent['bytes'] / 1e6:.1f} MB")
    t = summary["turnaround"]
    if t["count"]:
        print(
            f"turnaround (last ack to delivered): p50 {t['p50_s']:.2f} s, p95 {t['p95_s']:.2f} s over {t['count']}"
        )
    print(drift_line(summary["drift"]))
    counters = summary["counters"]
    if counters:
        print("counters:   " + ", ".join(f"{k} {v}" for k, v in sorted(counters.items())))
    if summary["last_events"]:
        print("last events:")
        for e in summary["last_events"]:
            print(f"  {e['time']} {e['kind']}: {e['message']}")
    return EXIT_OK
