#!/usr/bin/env python3
"""Fleet benchmark: ``status`` across 10, 25 and 50 local pacsd servers.

Starts the largest fleet asked for (``--sizes``, default 10,25,50) as real ``pacsd serve``
processes on free loopback ports, each with its own data directory, then measures for
each size, and for one server as the baseline:

* ``pacsctl``  -- ``pacsctl --endpoints a,b,... status`` as a process, wall clock from
  start to exit (interpreter start-up, connecting, the calls, closing): what an operator
  or an Ansible task waits for. The baseline is ``pacsctl -e a status``;
* ``sdk cold`` -- ``Fleet.from_endpoints(...)``, ``fleet.server.get()``, ``close()`` in this
  process: a script that connects, asks once and leaves. Baseline: ``Client`` alike;
* ``sdk warm`` -- ``fleet.server.get()`` on a fleet whose channels are already connected:
  a long-running controller polling its fleet. Baseline: one ``client.server.get()``.

Each figure is the median of ``--repeat`` runs; every run must return a RUNNING server
for every endpoint (and pacsctl must exit 0), otherwise the benchmark fails. The ratio is
the fleet's median divided by the single server's: with perfect concurrency it would stay
near 1. It also reports what the servers cost: resident and proportional set size per
process (from /proc) and how long starting them took.

Run ``bench/fleet.py --help``; ``bench/README.md`` describes the output.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LISTENING = re.compile(
    r"^listening dicom=(?P<dhost>\S+):(?P<dport>\d+) control=(?P<chost>\S+):(?P<cport>\d+)$"
)
DEFAULT_SIZES = (10, 25, 50)
GOAL_SIZE = 50
GOAL_SECONDS = 2.0
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
#: (mode, unit scale of the printed figure, column width): seconds, or milliseconds.
MODES = (("pacsctl", 1, 9), ("sdk cold", 1, 10), ("sdk warm", 1000, 11), ("aio warm", 1000, 11))


class BenchError(Exception):
    """A measurement could not be made or did not verify; the message says why."""


@dataclass
class Server:
    proc: subprocess.Popen[str]
    folder: Path
    endpoint: str = ""
    dicom_port: int = 0


@dataclass
class Figure:
    mode: str
    size: int
    runs: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)


# --------------------------------------------------------------------------- servers


def _tool(name: str, explicit: str | None) -> str:
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise BenchError(f"{name} is not installed (pip install -e . in this venv)")
    return found


def start_servers(pacsd: str, count: int, workdir: Path, concurrency: int) -> list[Server]:
    """``count`` pacsd processes, launched ``concurrency`` at a time (50 interpreters
    importing pydicom at once on two cores only make each other slower)."""

    def launch(index: int) -> Server:
        folder = workdir / f"pacs{index + 1}"
        folder.mkdir(parents=True)
        with (folder / "pacsd.stderr").open("w") as err:
            proc = subprocess.Popen(
                [
                    pacsd,
                    "serve",
                    "--dicom-port",
                    "0",
                    "--control-port",
                    "0",
                    "--data-dir",
                    str(folder / "data"),
                    "--log-level",
                    "WARNING",
                ],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                # One engine process per server: 50 servers on 2 cores are plenty. No
                # bucket folders made ahead: these servers store nothing, and 50 of them
                # making 4096 folders each would be measured as startup load.
                env={**os.environ, "PACSD_WORKERS": "1", "PACSD_PREPARE_BUCKETS": "0"},
            )
        server = Server(proc, folder)
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        match = LISTENING.match(line)
        if not match:
            tail = (folder / "pacsd.stderr").read_text(errors="replace")[-2000:]
            raise BenchError(f"pacsd {index + 1} did not start: {line!r}\n{tail}")
        server.endpoint = f"{match['chost']}:{match['cport']}"
        server.dicom_port = int(match["dport"])
        return server

    servers: list[Server] = []
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [pool.submit(launch, i) for i in range(count)]
        errors = []
        for future in futures:
            try:
                servers.append(future.result(timeout=START_TIMEOUT))
            except Exception as exc:  # keep the ones that started, to stop them
                errors.append(exc)
    if errors:
        stop_servers(servers)
        raise BenchError(str(errors[0]))
    return servers


def stop_servers(servers: Sequence[Server]) -> None:
    for server in servers:
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
    for server in servers:
        try:
            server.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


def memory(servers: Sequence[Server]) -> dict[str, float]:
    """Per-process RSS and PSS (MiB), from /proc. PSS splits shared pages fairly between
    the processes sharing them, so its sum is what the fleet really costs."""
    rss, pss = [], []
    for server in servers:
        status = Path(f"/proc/{server.proc.pid}/status").read_text()
        rss.append(int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)[1]) / 1024)  # type: ignore[index]
        rollup = Path(f"/proc/{server.proc.pid}/smaps_rollup")
        if rollup.exists():
            found = re.search(r"^Pss:\s+(\d+) kB", rollup.read_text(), re.M)
            if found:
                pss.append(int(found[1]) / 1024)
    out = {
        "rss_mib_mean": statistics.mean(rss),
        "rss_mib_total": sum(rss),
    }
    if pss:
        out["pss_mib_mean"] = statistics.mean(pss)
        out["pss_mib_total"] = sum(pss)
    return out


def mem_available_mib() -> float:
    text = Path("/proc/meminfo").read_text()
    return int(re.search(r"^MemAvailable:\s+(\d+) kB", text, re.M)[1]) / 1024  # type: ignore[index]


# --------------------------------------------------------------------------- measurements


def _check_states(states: Sequence[Any], count: int, what: str) -> None:
    if len(states) != count or any(s != "SERVER_STATE_RUNNING" for s in states):
        raise BenchError(f"{what}: expected {count} RUNNING servers, got {states}")


def pacsctl_run(pacsctl: str, endpoints: Sequence[str]) -> float:
    if len(endpoints) == 1:
        args = [pacsctl, "-w", "json", "-e", endpoints[0], "status"]
    else:
        args = [pacsctl, "-w", "json", "--endpoints", ",".join(endpoints), "status"]
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchError(f"pacsctl exited {proc.returncode}: {proc.stderr[-2000:]}")
    document = json.loads(proc.stdout)
    if len(endpoints) == 1:
        states = [document["server"]["state"]]
    else:
        states = [item["result"]["server"]["state"] for item in document["servers"]]
    _check_states(states, len(endpoints), "pacsctl")
    return elapsed


def sdk_cold(endpoints: Sequence[str], parallelism: int) -> float:
    from pacsd.client import Client, Fleet, message_to_dict

    start = time.perf_counter()
    if len(endpoints) == 1:
        with Client(endpoints[0]) as client:
            states = [message_to_dict(client.server.get())["state"]]
    else:
        with Fleet.from_endpoints(endpoints, parallelism=parallelism) as fleet:
            results = fleet.server.get()
            states = [message_to_dict(r.unwrap())["state"] for r in results]
    elapsed = time.perf_counter() - start
    _check_states(states, len(endpoints), "sdk cold")
    return elapsed


def sdk_warm(endpoints: Sequence[str], parallelism: int, repeat: int) -> list[float]:
    from pacsd.client import Client, Fleet, message_to_dict

    runs: list[float] = []
    if len(endpoints) == 1:
        with Client(endpoints[0]) as client:
            client.server.get()  # connect
            for _ in range(repeat):
                start = time.perf_counter()
                state = message_to_dict(client.server.get())["state"]
                runs.append(time.perf_counter() - start)
                _check_states([state], 1, "sdk warm")
        return runs
    with Fleet.from_endpoints(endpoints, parallelism=parallelism) as fleet:
        fleet.server.get()  # connect every channel
        for _ in range(repeat):
            start = time.perf_counter()
            results = fleet.server.get()
            runs.append(time.perf_counter() - start)
            states = [message_to_dict(r.unwrap())["state"] for r in results]
            _check_states(states, len(endpoints), "sdk warm")
    return runs


def aio_warm(endpoints: Sequence[str], parallelism: int, repeat: int) -> list[float]:
    import asyncio

    from pacsd.client import AsyncFleet, message_to_dict

    async def run() -> list[float]:
        runs: list[float] = []
        async with AsyncFleet.from_endpoints(endpoints, parallelism=parallelism) as fleet:
            await fleet.server.get()  # connect every channel
            for _ in range(repeat):
                start = time.perf_counter()
                results = await fleet.server.get()
                runs.append(time.perf_counter() - start)
                states = [message_to_dict(r.unwrap())["state"] for r in results]
                _check_states(states, len(endpoints), "aio warm")
        return runs

    return asyncio.run(run())


def measure(
    endpoints: Sequence[str], sizes: Sequence[int], pacsctl: str, parallelism: int, repeat: int
) -> list[Figure]:
    figures: list[Figure] = []
    for size in (1, *sizes):
        chosen = endpoints[:size]
        cli = Figure("pacsctl", size)
        cold = Figure("sdk cold", size)
        for _ in range(repeat):
            cli.runs.append(pacsctl_run(pacsctl, chosen))
            cold.runs.append(sdk_cold(chosen, parallelism))
        warm = Figure("sdk warm", size, sdk_warm(chosen, parallelism, repeat))
        aio = Figure("aio warm", size, aio_warm(chosen, parallelism, repeat))
        figures += [cli, cold, warm, aio]
        print(
            f"measured {size:>3} server(s): pacsctl {cli.median:.3f} s, sdk cold "
            f"{cold.median:.3f} s, sdk warm {warm.median * 1000:.1f} ms, "
            f"aio warm {aio.median * 1000:.1f} ms",
            file=sys.stderr,
        )
    return figures


# --------------------------------------------------------------------------- report


def report(
    figures: Sequence[Figure],
    sizes: Sequence[int],
    info: dict[str, Any],
) -> tuple[str, dict[str, Any]]:
    by = {(f.mode, f.size): f for f in figures}
    lines = [
        "pacsd fleet benchmark: status across local pacsd servers",
        f"  {info['cpus']} CPUs; {info['python']}; parallelism {info['parallelism']}; "
        f"median of {info['repeat']} run(s); loopback",
        f"  started {info['started']} servers in {info['start_seconds']:.1f} s; per server "
        f"RSS {info['memory']['rss_mib_mean']:.0f} MiB"
        + (
            f", PSS {info['memory']['pss_mib_mean']:.0f} MiB "
            f"(fleet PSS {info['memory']['pss_mib_total'] / 1024:.2f} GiB)"
            if "pss_mib_mean" in info["memory"]
            else ""
        ),
        f"  MemAvailable {info['mem_available_before_mib'] / 1024:.1f} GiB before, "
        f"{info['mem_available_after_mib'] / 1024:.1f} GiB with the fleet running",
        f"  1-min load average {info['load_average_before']:.2f} before, "
        f"{info['load_average_after']:.2f} after (other work on the machine skews every figure)",
        "",
        f"{'servers':>7}  {'pacsctl s':>9}  {'ratio':>6}  {'sdk cold s':>10}  {'ratio':>6}  "
        f"{'sdk warm ms':>11}  {'ratio':>6}  {'aio warm ms':>11}  {'ratio':>6}",
        "-" * 90,
    ]
    rows = []
    for size in (1, *sizes):
        cells = [f"{size:>7}"]
        row: dict[str, Any] = {"servers": size}
        for mode, scale, width in MODES:
            figure = by[(mode, size)]
            ratio = figure.median / by[(mode, 1)].median
            digits = 1 if scale == 1000 else 3
            cells.append(f"{figure.median * scale:>{width}.{digits}f}")
            cells.append(f"{ratio:>6.2f}")
            key = mode.replace(" ", "_")
            row[key] = {"median_s": figure.median, "runs_s": figure.runs, "ratio": ratio}
        lines.append("  ".join(cells))
        rows.append(row)
    lines.append("")
    for size in sizes:
        lines.append(
            f"ratio x{size}: pacsctl={by[('pacsctl', size)].median / by[('pacsctl', 1)].median:.2f}"
            f" sdk_cold={by[('sdk cold', size)].median / by[('sdk cold', 1)].median:.2f}"
            f" sdk_warm={by[('sdk warm', size)].median / by[('sdk warm', 1)].median:.2f}"
            f" aio_warm={by[('aio warm', size)].median / by[('aio warm', 1)].median:.2f}"
        )
    goal = None
    if GOAL_SIZE in sizes:
        seconds = by[("pacsctl", GOAL_SIZE)].median
        met = seconds < GOAL_SECONDS
        goal = {"size": GOAL_SIZE, "seconds": seconds, "limit": GOAL_SECONDS, "met": met}
        lines.append(
            f"goal: pacsctl status on {GOAL_SIZE} servers in {seconds:.2f} s "
            f"(limit {GOAL_SECONDS:.0f} s): {'met' if met else 'NOT met'}"
        )
    lines.append(
        f"verified: {sum(len(f.runs) for f in figures)} measurements, every server answered "
        "RUNNING in every run"
    )
    return "\n".join(lines), {"info": info, "results": rows, "goal": goal}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        default=",".join(map(str, DEFAULT_SIZES)),
        help="fleet sizes to measure, comma-separated (default 10,25,50)",
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (default 5)")
    parser.add_argument(
        "--parallelism", type=int, default=32, help="Fleet parallelism (default 32)"
    )
    parser.add_argument(
        "--start-concurrency",
        type=int,
        default=8,
        help="pacsd processes started at once (default 8)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--workdir", type=Path, help="where server data goes (default: tmp)")
    parser.add_argument("--pacsd", help="pacsd executable (default: beside this python)")
    parser.add_argument("--pacsctl", help="pacsctl executable (default: beside this python)")
    args = parser.parse_args(argv)
    try:
        sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--sizes must be integers, not {args.sizes!r}")
    if not sizes or sizes[0] < 2 or args.repeat < 1:
        parser.error("sizes must be 2 or more and --repeat at least 1")

    pacsd = _tool("pacsd", args.pacsd)
    pacsctl = _tool("pacsctl", args.pacsctl)
    base = tempfile.mkdtemp(prefix="pacsd-fleet-bench-", dir=args.workdir)
    servers: list[Server] = []
    try:
        before = mem_available_mib()
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        print(f"starting {sizes[-1]} pacsd servers ...", file=sys.stderr)
        servers = start_servers(pacsd, sizes[-1], Path(base), args.start_concurrency)
        started = time.perf_counter() - start
        time.sleep(1.0)  # let start-up allocations settle before reading memory
        info: dict[str, Any] = {
            "cpus": os.cpu_count(),
            "python": f"Python {platform.python_version()}",
            "parallelism": args.parallelism,
            "repeat": args.repeat,
            "started": len(servers),
            "start_seconds": started,
            "memory": memory(servers),
            "mem_available_before_mib": before,
            "mem_available_after_mib": mem_available_mib(),
            "load_average_before": load_before,
        }
        figures = measure(
            [s.endpoint for s in servers], sizes, pacsctl, args.parallelism, args.repeat
        )
        info["load_average_after"] = os.getloadavg()[0]
        text, document = report(figures, sizes, info)
        print(text)
        if args.json:
            document["figures"] = [asdict(f) for f in figures]
            args.json.write_text(json.dumps(document, indent=2))
        return 0
    except BenchError as exc:
        print(f"fleet.py: error: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_servers(servers)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
