"""The listener node: receive throughput against dcmtk ``storescp``, turnaround, memory.

In one run:

* **Receive throughput** (files/s, MB/s) of 200 small (256x256 16-bit) and 20 large
  (2048x2048 16-bit, 8 MB) uncompressed files sent by dcmtk ``storescu`` (TCP_NODELAY)
  to dcmtk ``storescp`` (which does not fsync) and to the node's guarded SCP with its
  durability on (``.part`` + fsync + rename + folder fsync + a SQLite WAL row with
  ``synchronous=FULL`` before each success) and, to show what fsync costs, with
  ``os.fsync`` made a no-op and the ledger at ``synchronous=NORMAL`` (``NodeLedger(durability=...)``).
  Target: node >= 0.5x dcmtk on the large files, durable.
* **CPU split** per study (decode, predict, SR, overlay, write) of the 2048x2048 JPEG 2000
  study, in this process, as the node's worker runs the stages for a PACS (no previews).
* **Turnaround**, once per ``--modes`` setting (``WORKERSxMAX_STUDIES``; by default one
  worker predicting up to 4 claimed studies in shared batches against two workers taking
  one each, compared in the same run: the machine may be shared), into a node delivering
  to a real Orthanc by C-STORE:

  - the fresh worker's first study (a real chest with a present finding when
    ``../shared/data`` is there) against three more of the same: last instance
    acknowledged to results written, and the ratio (target: within 1.5x);
  - five studies one at a time (p50 target < 1.0 s beyond the quiet period), split into
    analysis and sending;
  - 4 senders at once, each sending 10 one-image studies (2048x2048 12-bit JPEG 2000
    lossless): from the last instance acknowledged (its ledger row) to the results
    stored in Orthanc (the delivery's ``sent`` time), less the quiet period; p50 and p95
    (target p95 < 5 s on 2 cores, goal 3 s), with the CPU seconds each process spent
    during the burst (node main process, workers, Orthanc, the storescu senders);
  - C-ECHO latency (association, echo, release; pynetdicom in its own process, every
    0.2 s) with the node idle and during the burst (target < 100 ms).
* **Memory**: peak RSS (VmHWM) of the node's main process and of its workers after the
  first studies and at the end.

Usage::

    python benchmarks/node.py [--small 200] [--large 20] [--senders 4] [--studies 10] \\
        [--modes 1x4,2x1] [--nice 5] [--grid-side N] [--skip-receive] [--skip-split] [--skip-turnaround]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pydicom.uid import generate_uid  # noqa: E402

from chexnet_dicom.testing import synth  # noqa: E402
from tests.helpers.shared import SHARED  # noqa: E402

ENV = {"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"}
os.environ["TCP_NODELAY"] = "1"  # dcmtk storescp (started by tests/helpers/peers.py) inherits it


def _restamp(ds: Any, folder: Path, n: int, *, one_study: bool) -> list[Path]:
    """``n`` copies of ``ds`` with new UIDs (one study, or a study each)."""
    folder.mkdir(parents=True, exist_ok=True)
    study = generate_uid()
    out = []
    for k in range(n):
        c = copy.copy(ds)
        c.file_meta = copy.deepcopy(ds.file_meta)
        c.SOPInstanceUID = generate_uid()
        c.StudyInstanceUID = study if one_study else generate_uid()
        c.SeriesInstanceUID = generate_uid()
        c.InstanceNumber = k + 1
        path = folder / f"f{k:04d}.dcm"
        synth.write(c, path)
        out.append(path)
    return out


def make_files(root: Path, small: int, large: int) -> tuple[list[Path], list[Path]]:
    s = synth.make_dataset(synth.chest_phantom((256, 256), seed=1), bits_stored=16, seed=1)
    big = synth.make_dataset(synth.chest_phantom((2048, 2048), seed=2), bits_stored=16, seed=2)
    return _restamp(s, root / "small", small, one_study=True), _restamp(
        big, root / "large", large, one_study=True
    )


def storescu(port: int, files: list[Path], aet: str = "STORESCU", called: str = "ANY", *extra: str) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(
        ["storescu", "-aet", aet, "-aec", called, *extra, "127.0.0.1", str(port), *map(str, files)],
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-500:])
    return took


def rate(files: list[Path], seconds: float) -> dict[str, float]:
    size = sum(p.stat().st_size for p in files)
    return {
        "s": round(seconds, 3),
        "files_per_s": round(len(files) / seconds, 1),
        "MB_per_s": round(size / 1e6 / seconds, 1),
    }


def parallel(port: int, files: list[Path], called: str, senders: int) -> float:
    """Wall time of ``senders`` storescu associations at once, sharing ``files``."""
    import threading

    parts = [files[k::senders] for k in range(senders)]
    t0 = time.perf_counter()
    threads = [threading.Thread(target=storescu, args=(port, part, "STORESCU", called)) for part in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def bench_dcmtk(tmp: Path, files: list[Path], senders: int = 1) -> float:
    from tests.helpers.peers import storescp

    with storescp(tmp, "ANY", name=f"dcmtk-{len(files)}-{time.monotonic_ns()}") as peer:
        return (
            storescu(peer.port, files, called="ANY")
            if senders == 1
            else parallel(peer.port, files, "ANY", senders)
        )


def bench_node(tmp: Path, files: list[Path], *, durable: bool, senders: int = 1) -> float:
    from chexnet_dicom.config import load_node_config
    from chexnet_dicom.node.ledger import NodeLedger
    from chexnet_dicom.node.scp import OwnOutputs, start_scp
    from chexnet_dicom.node.spool import Spool
    from chexnet_dicom.storage import Durability

    spool_dir = tmp / f"spool-{time.monotonic_ns()}"
    cfg = load_node_config(
        None,
        {
            "listen.port": 0,
            "access.allow": ["STORESCU"],
            "spool.dir": str(spool_dir),
            "spool.min_free_bytes": 64 * 1024 * 1024,
        },
    )
    spool = Spool(cfg.spool)
    ledger = NodeLedger(spool.ledger_path, durability=Durability.FULL if durable else Durability.NORMAL)
    running = start_scp(cfg, spool, ledger, OwnOutputs("0" * 64, "1.2.3"))
    real_fsync = os.fsync
    try:
        if not durable:
            os.fsync = lambda fd: None  # type: ignore[assignment]
        if senders > 1:
            return parallel(running.port, files, "CHEXDCM", senders)
        return storescu(running.port, files, called="CHEXDCM")
    finally:
        os.fsync = real_fsync
        running.stop(grace=2)
        ledger.close()
        subprocess.run(["rm", "-rf", str(spool_dir)], check=False)


def receive(tmp: Path, small: int, large: int) -> dict[str, Any]:
    s, big = make_files(tmp / "files", small, large)
    out: dict[str, Any] = {}
    for name, files in (("small", s), ("large", big)):
        bench_dcmtk(tmp, files[: max(2, len(files) // 10)])  # warm the page cache and the tools
        dcm = bench_dcmtk(tmp, files)
        node = bench_node(tmp, files, durable=True)
        nofsync = bench_node(tmp, files, durable=False)
        out[name] = {
            "files": len(files),
            "dcmtk_storescp": rate(files, dcm),
            "node_durable": rate(files, node),
            "node_without_fsync": rate(files, nofsync),
            "node_vs_dcmtk": round(dcm / node, 2),
            "fsync_cost_s_per_file": round((node - nofsync) / len(files), 4),
        }
        if name == "small":  # overlapping associations (pynetdicom issue #917): 4 at once
            both = bench_node(tmp, files, durable=True, senders=4)
            out["small_4_associations_at_once"] = {
                "node_durable": rate(files, both),
                "dcmtk_storescp": rate(files, bench_dcmtk(tmp, files, senders=4)),
                "node_4_at_once_vs_node_1": round(node / both, 2),
            }
    subprocess.run(["rm", "-rf", str(tmp / "files")], check=False)
    return out


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process so far (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    """CPU seconds of this process's reaped children (the ``storescu`` runs)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class CpuAccount:
    """CPU seconds each named process (and the reaped ``storescu`` children) spent since creation."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = {k: _cpu_s(p) for k, p in pids.items()}
        self.children = _children_cpu_s()

    def spent(self) -> dict[str, float]:
        out = {k: round(_cpu_s(p) - self.start[k], 1) for k, p in self.pids.items()}
        out["storescu senders"] = round(_children_cpu_s() - self.children, 1)
        return out


def _p95(values: list[float]) -> float:
    return round(statistics.quantiles(values, n=20, method="inclusive")[18], 2)


def _burst_parts(rows: list[Any], quiet: float, cpu: dict[str, float]) -> dict[str, float]:
    """How long the burst took to arrive, the p95 of its two halves, and its CPU per study."""
    acks = [r["last_ack"] for r in rows]
    return {
        "arrivals_span_s": round(max(acks) - min(acks), 2),  # first to last study acknowledged
        "p95_to_results_written_s": _p95([r["created"] - r["last_ack"] - quiet for r in rows]),
        "p95_results_written_to_stored_in_orthanc_s": _p95([r["sent"] - r["created"] for r in rows]),
        "cpu_s_per_study_all_processes": round(sum(cpu.values()) / max(1, len(rows)), 2),
    }


def _hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


#: A C-ECHO loop in its own process (pynetdicom: no per-echo process start or dictionary load,
#: and no share of the benchmark's interpreter lock, where the node runs): one JSON line per echo.
ECHO_LOOP = """
import json, sys, time
from pynetdicom import AE
ae = AE("SEND0")
ae.add_requested_context("1.2.840.10008.1.1")
while True:
    t = time.perf_counter()
    a = ae.associate("127.0.0.1", int(sys.argv[1]), ae_title="CHEXDCM")
    ok = a.is_established and a.send_c_echo().Status == 0
    a.release()
    print(json.dumps([time.time(), time.perf_counter() - t, ok]), flush=True)
    time.sleep(0.2)
"""


class EchoLoop:
    """C-ECHO every 0.2 s against the node from another process; :meth:`between` gives latencies."""

    def __init__(self, port: int) -> None:
        import threading

        self.samples: list[tuple[float, float, bool]] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ECHO_LOOP, str(port)], stdout=subprocess.PIPE, text=True
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.samples.append(tuple(json.loads(line)))  # type: ignore[arg-type]

    def between(self, t0: float, t1: float) -> dict[str, Any]:
        ms = sorted(1000 * s[1] for s in self.samples if t0 <= s[0] <= t1)
        if not ms:
            return {"n": 0}
        q = statistics.quantiles(ms, n=20, method="inclusive") if len(ms) > 1 else [ms[0]] * 19
        failed = sum(1 for s in self.samples if t0 <= s[0] <= t1 and not s[2])
        return {
            "n": len(ms),
            "p50": round(ms[len(ms) // 2], 1),
            "p95": round(q[18], 1),
            "max": round(ms[-1], 1),
            "failed": failed,
        }

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def _first_and_warm(path: Path | None, j2k: Any) -> Any:
    """The study the fresh worker gets first: a real chest with a present finding when available."""
    if path is not None and path.exists():
        import pydicom

        return pydicom.dcmread(path), "siim_6904 (real 1024x1024 chest, 1 finding present)"
    return j2k, "the 2048x2048 JPEG 2000 phantom"


def cpu_split(tmp: Path, j2k: Any, runs: int = 5) -> dict[str, Any]:
    """Per-study CPU seconds of each stage, in this process, as the node's worker runs them.

    decode (read + decode + display), predict (model input + forward pass + CAMs), SR,
    overlay (pixels + SC dataset), write (files, fsync): medians of ``runs`` after one warm-up.
    """
    import dataclasses

    import chexnet_dicom.outputs.build as build
    from chexnet_dicom.config import load_node_config
    from chexnet_dicom.node.worker import load_node_predictor
    from chexnet_dicom.outputs.write import write_outputs
    from chexnet_dicom.pipeline import results_for_paths
    from chexnet_dicom.pipeline.warm import warm_result_stages

    cfg = load_node_config(None, {"access.allow": ["X"], "spool.dir": str(tmp / "split-spool")})
    predictor = load_node_predictor(cfg)
    options = dataclasses.replace(cfg.outputs, previews=False)  # as for a PACS destination
    warm_result_stages(predictor, options, cfg.ingest)
    path = _restamp(j2k, tmp / "split", 1, one_study=False)[0]
    spent: dict[str, list[float]] = {k: [] for k in ("decode", "predict", "SR", "overlay", "write")}
    clock: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        def run(*a: Any, **k: Any) -> Any:
            t = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                clock[name] = clock.get(name, 0.0) + time.process_time() - t

        return run

    real = {n: getattr(build, n) for n in ("build_sr", "build_sc", "overlay_pixels")}
    build.build_sr = timed("SR", real["build_sr"])
    build.build_sc = timed("overlay", real["build_sc"])
    build.overlay_pixels = timed("overlay", real["overlay_pixels"])
    try:
        for k in range(runs + 1):
            clock.clear()
            t = time.process_time()
            (result,) = results_for_paths([path], predictor, config=cfg.ingest)
            t1 = time.process_time()
            outputs = build.build_outputs(result, options, [])
            t2 = time.process_time()
            write_outputs(outputs, tmp / "split-out" / str(k))
            t3 = time.process_time()
            if k == 0:
                continue
            share = result.timings["read"] / max(1e-9, result.timings["read"] + result.timings["predict"])
            spent["decode"].append((t1 - t) * share)
            spent["predict"].append((t1 - t) * (1 - share))
            spent["SR"].append(clock.get("SR", 0.0))
            spent["overlay"].append(clock.get("overlay", 0.0))
            spent["write"].append(t3 - t2)
            spent.setdefault("other build (sidecar)", []).append(
                t2 - t1 - clock.get("SR", 0) - clock.get("overlay", 0)
            )
    finally:
        for n, fn in real.items():
            setattr(build, n, fn)
    out = {k: round(statistics.median(v), 3) for k, v in spent.items()}
    out["total"] = round(sum(out.values()), 3)
    return {"cpu_s_per_study": out, "runs": runs, "options": "node to a PACS: SR + one SC, no previews"}


def _sent_count(node: Any) -> int:
    return len(node.ledger.deliveries("sent"))


def turnaround(
    tmp: Path,
    senders: int,
    studies: int,
    workers: int = 1,
    max_studies: int = 4,
    alone: int = 5,
    first_path: Path | None = None,
    nice: int = 5,
    grid_side: int | None = None,
) -> dict[str, Any]:
    """The node delivering to Orthanc: the fresh worker's first study, one at a time, then the burst."""
    import threading

    from chexnet_dicom.config import load_node_config
    from chexnet_dicom.net.destination import parse_destination
    from chexnet_dicom.node.service import Node
    from tests.helpers.peers import orthanc

    tmp = tmp / f"w{workers}-m{max_studies}"
    tmp.mkdir(parents=True, exist_ok=True)
    ds = synth.make_dataset(synth.chest_phantom((2048, 2048), seed=3), bits_stored=12, seed=3)
    j2k = synth.encode(ds, "1.2.840.10008.1.2.4.90")
    first_ds, first_name = _first_and_warm(first_path, j2k)
    per_sender = [_restamp(j2k, tmp / f"j2k{k}", studies, one_study=False) for k in range(senders)]
    quiet = 1.0
    with orthanc(tmp, dicomweb=False) as pacs:
        cfg = load_node_config(
            None,
            {
                "listen.port": 0,
                "listen.quiet_period": quiet,
                "access.allow": [f"SEND{k}" for k in range(senders)],
                "spool.dir": str(tmp / "spool"),
                "spool.min_free_bytes": 64 * 1024 * 1024,
                "work.workers": workers,
                "work.max_studies": max_studies,
                "work.nice": nice,
                **({"ingest.limits.max_grid_side": grid_side} if grid_side else {}),
            },
        )
        node = Node(cfg, parse_destination(pacs.address, calling_ae="CHEXDCM"))
        port = node.start()
        assert node.ledger is not None
        worker_pids = [p.pid for p, _ in node._workers]
        # the fresh worker's first study, then three more of the same, one at a time
        for k, path in enumerate(_restamp(first_ds, tmp / "first", 4, one_study=False)):
            storescu(port, [path], "SEND0", "CHEXDCM", "-xv" if first_ds is j2k else "-xy")
            while _sent_count(node) < k + 1:
                time.sleep(0.05)
        rows = node.ledger.deliveries("sent")
        written = [r["created"] - r["last_ack"] - quiet for r in rows]
        first = {
            "study": first_name,
            "first_to_results_written_s": round(written[0], 2),
            "warm_to_results_written_s": round(statistics.median(written[1:]), 2),
            "first_vs_warm": round(written[0] / statistics.median(written[1:]), 2),
        }
        rss_start = {"main": _hwm(os.getpid()), **{f"worker{k}": _hwm(p) for k, p in enumerate(worker_pids)}}
        # latency without queueing: studies one at a time, each delivered before the next
        before = _sent_count(node)
        for k, path in enumerate(_restamp(j2k, tmp / "alone", alone, one_study=False)):
            storescu(port, [path], "SEND0", "CHEXDCM", "-xv")
            while _sent_count(node) < before + k + 1:
                time.sleep(0.05)
        lone_rows = node.ledger.deliveries("sent")[before:]
        lone = sorted(r["sent"] - r["last_ack"] - quiet for r in lone_rows)
        lone_written = statistics.median(r["created"] - r["last_ack"] - quiet for r in lone_rows)
        lone_sending = statistics.median(r["sent"] - r["created"] for r in lone_rows)
        done_before = _sent_count(node)
        total = senders * studies + done_before
        echo = EchoLoop(port)
        idle_from = time.time()
        time.sleep(3.0)  # the node idle: the echo baseline
        idle_to = time.time()

        def send(k: int) -> None:
            for path in per_sender[k]:
                storescu(port, [path], f"SEND{k}", "CHEXDCM", "-xv")

        account = CpuAccount(
            {
                "node main (receive, schedule, deliver)": os.getpid(),
                "Orthanc": pacs.proc.pid,
                **{f"worker{k}": p for k, p in enumerate(worker_pids)},
            }
        )
        t0, burst_from = time.perf_counter(), time.time()
        threads = [threading.Thread(target=send, args=(k,)) for k in range(senders)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        while _sent_count(node) < total:
            time.sleep(0.1)
        wall = time.perf_counter() - t0
        burst_to = time.time()
        burst_cpu = account.spent()
        echo.stop()
        rss_end = {"main": _hwm(os.getpid()), **{f"worker{k}": _hwm(p) for k, p in enumerate(worker_pids)}}
        rows = node.ledger.deliveries("sent")[done_before:]
        times = sorted(r["sent"] - r["last_ack"] - quiet for r in rows)
        in_orthanc = len(pacs.rest("/instances"))
        node.stop()
    return {
        "workers": workers,
        "max_studies": max_studies,
        "nice": nice,
        "first_study_of_a_fresh_worker": first,
        "one_at_a_time": {
            "studies": len(lone),
            "p50_s": round(statistics.median(lone), 2),
            "max_s": round(lone[-1], 2),
            "p50_to_results_written_s": round(lone_written, 2),
            "p50_results_written_to_stored_in_orthanc_s": round(lone_sending, 2),
        },
        "studies": len(times),
        "wall_s": round(wall, 1),
        "p50_s": round(statistics.median(times), 2),
        "p95_s": _p95(times),
        **_burst_parts(rows, quiet, burst_cpu),
        "max_s": round(times[-1], 2),
        "burst_cpu_s_by_process": burst_cpu,
        "c_echo_ms": {
            "node_idle": echo.between(idle_from, idle_to),
            "during_burst": echo.between(burst_from, burst_to),
        },
        "instances_in_orthanc": in_orthanc,
        "peak_rss_MB_after_first_studies": {k: round(v / 1e6) for k, v in rss_start.items()},
        "peak_rss_MB_at_end": {k: round(v / 1e6) for k, v in rss_end.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", type=int, default=200)
    ap.add_argument("--large", type=int, default=20)
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--studies", type=int, default=10)
    ap.add_argument(
        "--modes",
        default="1x4,2x1",
        help="node work settings to compare, WORKERSxMAX_STUDIES, comma-separated "
        "(default: one worker predicting up to 4 claimed studies in shared batches, "
        "against two workers taking one study each)",
    )
    ap.add_argument("--first", type=Path, default=SHARED / "dicom/chest/siim_6904.dcm")
    ap.add_argument(
        "--grid-side",
        type=int,
        default=None,
        help="an experiment: ingest.limits.max_grid_side of the node (the grid the heatmaps, regions "
        "and SC are computed on; default: the configuration's, 4096)",
    )
    ap.add_argument(
        "--nice",
        type=int,
        default=5,
        help="work.nice of the node's workers (5, the default: the listener first; 0 on a machine "
        "shared with other jobs, where niced workers lose CPU to them)",
    )
    ap.add_argument("--skip-receive", action="store_true")
    ap.add_argument("--skip-split", action="store_true")
    ap.add_argument("--skip-turnaround", action="store_true")
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    result: dict[str, Any] = {"cpus": os.cpu_count(), "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="chexdcm-bench-node-") as d:
        tmp = Path(d)
        if not args.skip_receive:
            result["receive"] = receive(tmp, args.small, args.large)
            print(json.dumps(result["receive"], indent=2), flush=True)
        if not args.skip_split:
            ds = synth.make_dataset(synth.chest_phantom((2048, 2048), seed=3), bits_stored=12, seed=3)
            result["split"] = cpu_split(tmp, synth.encode(ds, "1.2.840.10008.1.2.4.90"))
            print(json.dumps(result["split"], indent=2), flush=True)
        if not args.skip_turnaround:
            result["turnaround"] = []
            with contextlib.suppress(KeyboardInterrupt):
                for mode in args.modes.split(","):
                    workers, max_studies = (int(x) for x in mode.split("x"))
                    one = turnaround(
                        tmp,
                        args.senders,
                        args.studies,
                        workers,
                        max_studies,
                        first_path=args.first,
                        nice=args.nice,
                        grid_side=args.grid_side,
                    )
                    result["turnaround"].append(one)
                    print(json.dumps(one, indent=2), flush=True)
            if len(result["turnaround"]) > 1:
                base = result["turnaround"][0]
                result["burst_vs_first_mode"] = [
                    {
                        "mode": f"{t['workers']}x{t['max_studies']}",
                        "p95_ratio": round(t["p95_s"] / base["p95_s"], 2),
                        "wall_ratio": round(t["wall_s"] / base["wall_s"], 2),
                    }
                    for t in result["turnaround"]
                ]
    result["load_average_after"] = os.getloadavg()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
