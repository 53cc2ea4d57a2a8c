"""The node's Prometheus endpoint (``[metrics]``, off by default; always bound to 127.0.0.1).

Every scrape reads the ledger (shared by all the node's processes, so the counts are
the node's, not one process's): received, analysed, failed, sent and dead-lettered
counts, queue depths, a histogram of turnaround (last instance acknowledged to
results delivered), and the latest input drift score (:mod:`.drift_window`):
``chexdcm_drift_score{part="metadata"|"features"|"outputs"|"combined"}`` (1.0 is the
threshold), ``chexdcm_drift_alarm`` (1 while the combined score is at or above it) and
``chexdcm_drift_window`` (images in the window).  No label carries a UID or any other
identifier.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chexnet_dicom.errors import ConfigError, StorageError
from chexnet_dicom.node.ledger import NodeLedger

__all__ = ["TURNAROUND_BUCKETS", "MetricsServer", "start_metrics"]

#: Turnaround histogram buckets (seconds).
TURNAROUND_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0)


class _Collector:
    def __init__(self, ledger: NodeLedger) -> None:
        self.ledger = ledger
        self.lock = threading.Lock()

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        with self.lock:
            try:
                summary = self.ledger.summary()
                drift_state = self.ledger.drift_state()
            except StorageError:
                return
        counters = summary["counters"]
        kinds = summary["kinds"]
        received = CounterMetricFamily(
            "chexdcm_instances_received", "Instances received, by kind", labels=["kind"]
        )
        for kind, n in sorted(kinds.items()):
            received.add_metric([kind], n)
        yield received
        for name, key, help_text in (
            ("chexdcm_studies_analysed", "studies_analysed", "Study analyses completed"),
            ("chexdcm_images_analysed", "images_analysed", "Images analysed"),
            ("chexdcm_studies_failed", "studies_failed", "Study analyses that failed"),
            ("chexdcm_deliveries_sent", "delivered", "Deliveries completed"),
            ("chexdcm_dead_letters", "dead_letters", "Deliveries dead-lettered after their last attempt"),
            ("chexdcm_duplicates", "duplicates", "Instances received again with the same bytes"),
            ("chexdcm_guard_trips", "guard_trips", "Associations cut off by the receive guard"),
            (
                "chexdcm_associations_refused",
                "associations_refused",
                "Associations rejected by the allow-list",
            ),
        ):
            yield CounterMetricFamily(name, help_text, value=counters.get(key, 0))
        queue = GaugeMetricFamily("chexdcm_queue_depth", "Work waiting", labels=["what"])
        queue.add_metric(["studies"], summary["queue"]["studies_waiting"])
        queue.add_metric(["deliveries"], summary["queue"]["deliveries_waiting"])
        yield queue
        values = summary["turnaround_s"]
        buckets = [(str(b), sum(1 for v in values if v <= b)) for b in TURNAROUND_BUCKETS]
        buckets.append(("+Inf", len(values)))
        yield HistogramMetricFamily(
            "chexdcm_turnaround_seconds",
            "Last instance acknowledged to results delivered (last 1000 deliveries)",
            buckets=buckets,
            sum_value=float(sum(values)),
        )
        yield from _drift_metrics(drift_state)


def _drift_metrics(state: dict[str, Any] | None) -> Iterator[Any]:
    """The drift gauges of the latest state (none before a window was scored)."""
    from prometheus_client.core import GaugeMetricFamily

    if state is None:
        return
    yield GaugeMetricFamily(
        "chexdcm_drift_window", "Analysed images in the drift window", value=int(state.get("window", 0))
    )
    score = state.get("score")
    if not score:
        return
    gauge = GaugeMetricFamily(
        "chexdcm_drift_score", "Input drift score by part and combined (1.0: the threshold)", labels=["part"]
    )
    for part, value in sorted(score["parts"].items()):
        gauge.add_metric([part], float(value))
    gauge.add_metric(["combined"], float(score["combined"]))
    yield gauge
    yield GaugeMetricFamily(
        "chexdcm_drift_alarm",
        "1 while the combined drift score is at or above 1.0",
        value=int(score["alarm"]),
    )


class MetricsServer:
    """A running endpoint; :meth:`shutdown` stops it."""

    def __init__(self, server: Any, thread: threading.Thread, ledger: NodeLedger, port: int) -> None:
        self._server = server
        self._thread = thread
        self._ledger = ledger
        self.port = port

    def shutdown(self) -> None:
        """Stop serving and close the ledger connection."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._ledger.close()


def start_metrics(port: int, ledger_path: str | Path) -> MetricsServer:
    """Serve ``/metrics`` on 127.0.0.1:``port`` (0: any free port) in a background thread.

    Raises
    ------
    ConfigError
        prometheus_client is not installed, or the port cannot be bound.
    """
    try:
        from prometheus_client import start_http_server
        from prometheus_client.registry import CollectorRegistry
    except ImportError as exc:
        raise ConfigError("metrics.enabled needs the prometheus-client package") from exc
    ledger = NodeLedger(ledger_path)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(ledger))
    try:
        server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    except OSError as exc:
        ledger.close()
        raise ConfigError(f"metrics.port {port} cannot be bound ({exc.strerror})") from exc
    return MetricsServer(server, thread, ledger, int(server.server_address[1]))
