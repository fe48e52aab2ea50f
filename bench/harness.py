"""What the bench scripts share: fresh processes per system, alternation, medians, CPU per op.

A script compares *systems* (``micro/uvloop``, ``raw/asyncio``, ...). Each round runs every
system once, in an order rotated from round to round (A B C, then B C A, ...), and each run
gets a fresh nats-server and fresh processes. A script's own process only orchestrates: the
service and the client run in child processes (the same script, started with ``--role``),
so each one's CPU can be measured and each runs the event loop of its column. The client
reports its own CPU for the measured phase (``time.process_time()``) and reads the service's
and the nats-server's from ``/proc/<pid>/stat`` before and after it.

Reported: the median over rounds of every figure, and the median of the per-round ratios
(micro ÷ raw of the same round), never a best-of.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from micro.testing import NatsServer

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
LOOPS = ("asyncio", "uvloop")
FSYNC_DEFAULT = "default"
FSYNC_ALWAYS = "always"


def available_loops(wanted: Sequence[str] = LOOPS) -> list[str]:
    """The event loops of ``wanted`` that this interpreter can run (uvloop may be missing)."""
    found = []
    for loop in wanted:
        if loop == "uvloop":
            try:
                import uvloop  # noqa: F401
            except ImportError:
                Console(stderr=True).print("uvloop not installed: its columns are skipped")
                continue
        found.append(loop)
    return found


def run_on(loop: str, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` on the named event loop, as a user's ``asyncio.run``/``uvloop.run``."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main())
    if loop != "asyncio":
        raise ValueError(f"unknown event loop {loop!r}")
    return asyncio.run(main())


# -- CPU ----------------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time process ``pid`` has used so far (Linux ``/proc``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        import psutil  # not Linux: psutil, if installed

        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    return (int(fields[11]) + int(fields[12])) / _TICK


@dataclass
class Meter:
    """Wall clock and CPU of this process and of other processes over one measured phase."""

    others: dict[str, int]
    """Name -> pid of the processes watched besides this one (``service``, ``server``)."""
    _wall: float = 0.0
    _own: float = 0.0
    _theirs: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        self._theirs = {name: cpu_seconds(pid) for name, pid in self.others.items()}
        self._own = time.process_time()
        self._wall = time.perf_counter()

    def stop(self, prefix: str, operations: int, own: str = "client") -> dict[str, float]:
        """``{prefix.seconds, prefix.<who>_us}``: wall seconds and CPU µs per operation."""
        wall = time.perf_counter() - self._wall
        own_cpu = time.process_time() - self._own
        figures = {f"{prefix}.seconds": wall, f"{prefix}.{own}_us": own_cpu / operations * 1e6}
        for name, pid in self.others.items():
            used = cpu_seconds(pid) - self._theirs[name]
            figures[f"{prefix}.{name}_us"] = used / operations * 1e6
        return figures


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    index = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


# -- nats-server --------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_server(fsync: str = FSYNC_ALWAYS, copy_of: Path | None = None) -> Iterator[NatsServer]:
    """A nats-server of its own in a temporary folder (holding a copy of ``copy_of``'s data),
    with JetStream's ``sync_interval: always`` or the server's default fsync (a sync every
    two minutes; writes reach the OS page cache only)."""
    with tempfile.TemporaryDirectory(prefix="micro-bench-") as folder:
        store = Path(folder) / "nats"
        if copy_of is not None:
            shutil.copytree(copy_of, store, ignore=shutil.ignore_patterns("nats-server.conf"))
        server = NatsServer(store_dir=store, sync_always=fsync == FSYNC_ALWAYS)
        server.start()
        try:
            yield server
        finally:
            server.stop()


def group_commit_env(choice: str, fsync: str) -> dict[str, str]:
    """The env that sets micro's ``event_store_group_commit`` for a server with ``fsync``.

    ``match`` turns it on where the server syncs every write (where the setting's own
    documentation says it pays) and leaves ``auto`` elsewhere (off, with a ``nats_url``).
    """
    if choice == "match":
        choice = "on" if fsync == FSYNC_ALWAYS else "auto"
    return {} if choice == "auto" else {"MICRO_EVENT_STORE_GROUP_COMMIT": choice}


def group_commit_label(choice: str, fsync: str) -> str:
    env = group_commit_env(choice, fsync)
    return f"group commit {env['MICRO_EVENT_STORE_GROUP_COMMIT']}" if env else "group commit auto"


# -- child processes ----------------------------------------------------------------------------


class ChildError(RuntimeError):
    pass


class Child:
    """A child process that talks by lines on stdout and stops when its stdin closes."""

    def __init__(self, command: list[str], env: dict[str, str] | None = None) -> None:
        self.command = command
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={
                **os.environ,
                # this checkout's micro first, in the children too
                "PYTHONPATH": os.pathsep.join(
                    filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))
                ),
                "MICRO_LOG_LEVEL": "warning",
                **(env or {}),
            },
        )
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.process.pid

    def line(self, timeout: float) -> str:
        """The next line the child prints; fails after ``timeout`` s or when it exits."""
        assert self.process.stdout is not None
        descriptor = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(descriptor, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.kill()
                    raise ChildError(f"no answer within {timeout:.0f} s from {self.command[1:4]}")
                if not selector.select(left):
                    continue
                chunk = os.read(descriptor, 65536)
                if not chunk:
                    self.process.wait()
                    raise ChildError(
                        f"{self.command[1:4]} ended with {self.process.returncode}"
                        f" before answering: {self._buffer[-500:]!r}"
                    )
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def expect(self, word: str, timeout: float = 60) -> str:
        """Wait for a line starting with ``word`` (other lines, such as warnings, are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.line(max(0.1, deadline - time.monotonic()))
            if line.startswith(word):
                return line[len(word) :].strip()

    def result(self, timeout: float) -> dict[str, Any]:
        """The JSON figures the child prints on a line starting with ``result``."""
        figures: dict[str, Any] = json.loads(self.expect("result", timeout))
        return figures

    def stop(self, timeout: float = 15) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def role_command(script: str, role: str, **params: Any) -> list[str]:
    """The command line that runs ``role`` of ``script`` with ``params``."""
    return [sys.executable, script, "--role", role, "--params", json.dumps(params)]


def dispatch(roles: Mapping[str, Callable[[dict[str, Any]], None]]) -> bool:
    """Run the child role named on the command line, if any; True when one ran."""
    if "--role" not in sys.argv:
        return False
    role = sys.argv[sys.argv.index("--role") + 1]
    params = json.loads(sys.argv[sys.argv.index("--params") + 1])
    roles[role](params)
    return True


def loop_name() -> str:
    """The event loop this process runs (a micro service chooses its own)."""
    return "uvloop" if "uvloop" in type(asyncio.get_running_loop()).__module__ else "asyncio"


def check_loop(system: str, wanted: str, ready: str) -> None:
    """Warn when a micro service ran another loop than ``MICRO_EVENT_LOOP`` asked for."""
    ran = json.loads(ready).get("loop") if ready.startswith("{") else None
    if ran is not None and ran != wanted:
        _notes.add(
            f"note: the {system} service ran {ran}: this micro does not honour "
            f"MICRO_EVENT_LOOP={wanted} (its client did run {wanted})"
        )


_notes: set[str] = set()


def say(word: str, payload: Any = None) -> None:
    """Print one protocol line for the parent (``ready``, ``result {...}``)."""
    text = word if payload is None else f"{word} {json.dumps(payload)}"
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def stdin_closed() -> None:
    """Return when the parent closes our stdin: the signal to stop."""
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)


def ignore_interrupts() -> None:
    # Ctrl+C in the terminal reaches the whole group; the parent stops its children itself.
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


# -- rounds -------------------------------------------------------------------------------------


Figures = dict[str, float]


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def alternate(
    systems: Sequence[str],
    rounds: int,
    run_one: Callable[[str, int], Figures],
    progress: Progress,
    label: str,
    before_round: Callable[[int], None] | None = None,
) -> dict[str, list[Figures]]:
    """Each system once per round, the order rotated every round; every round's figures."""
    results: dict[str, list[Figures]] = {system: [] for system in systems}
    task = progress.add_task(label, total=rounds * len(systems))
    for round_ in range(rounds):
        if before_round is not None:
            progress.update(task, description=f"{label}: round {round_ + 1}, preparing")
            before_round(round_)
        shift = round_ % len(systems)
        for system in [*systems[shift:], *systems[:shift]]:
            progress.update(task, description=f"{label}: round {round_ + 1}/{rounds}, {system}")
            results[system].append(run_one(system, round_))
            progress.advance(task)
    progress.remove_task(task)
    return results


def medians(results: dict[str, list[Figures]]) -> dict[str, Figures]:
    summary: dict[str, Figures] = {}
    for system, rounds in results.items():
        keys = dict.fromkeys(key for r in rounds for key in r)  # a failed round has none
        summary[system] = {
            key: statistics.median(r[key] for r in rounds if key in r) for key in keys
        }
    return summary


@dataclass
class Ratio:
    """``num`` ÷ ``den`` of figure ``key``, the median of the per-round ratios."""

    num: str
    den: str
    key: str
    label: str = ""
    goal: float | None = None
    at_most: bool = False
    """The goal is an upper bound (latency): met when the ratio is at most ``goal``."""
    den_key: str | None = None
    """The denominator's figure when it has another name (W3: ``rebuild`` ÷ ``replay``)."""
    num_cpu: str | None = None
    den_cpu: str | None = None
    """The phases whose CPU per op is compared; by default the section's."""

    def per_round(self, results: dict[str, list[Figures]]) -> list[float]:
        if self.num not in results or self.den not in results:
            return []
        den_key = self.den_key or self.key
        return [
            a[self.key] / b[den_key]
            for a, b in zip(results[self.num], results[self.den], strict=False)
            if b.get(den_key) and self.key in a
        ]

    def value(self, results: dict[str, list[Figures]]) -> float | None:
        ratios = self.per_round(results)
        return statistics.median(ratios) if ratios else None

    def verdict(self, results: dict[str, list[Figures]]) -> str:
        value = self.value(results)
        if self.goal is None or value is None:
            return ""
        met = value <= self.goal if self.at_most else value >= self.goal
        bound = "<=" if self.at_most else ">="
        return f"{bound} {self.goal:g}x: " + ("[green]met[/]" if met else "[red]not met[/]")


def cpu_total(figures: Figures, prefix: str) -> float:
    return sum(
        value
        for key, value in figures.items()
        if key.startswith(f"{prefix}.") and key.endswith("_us")
    )


@dataclass
class Section:
    """One table: the systems' figures for one measured phase, CPU per op beside them."""

    title: str
    prefix: str
    """The phase's key prefix: its CPU figures are ``prefix.<process>_us``."""
    columns: list[tuple[str, str, str]]
    """(key, heading, format) of each figure, e.g. ("tput", "calls/s", ",.0f")."""
    processes: tuple[str, ...] = ("client", "service", "server")
    ratios: list[Ratio] = field(default_factory=list)


def report(
    console: Console,
    sections: list[Section],
    results: dict[str, list[Figures]],
    note: str = "",
) -> list[dict[str, Any]]:
    """Print each section's table and its ratios; return the ratios for ``--json``."""
    summary = medians(results)
    rounds = max((len(r) for r in results.values()), default=0)
    lines: list[dict[str, Any]] = []
    for section in sections:
        present = [s for s in results if any(f"{section.prefix}.seconds" in r for r in results[s])]
        if not present:
            continue
        table = Table(title=f"{section.title} (median of {rounds} rounds)", title_justify="left")
        table.add_column("system", justify="left")
        for _key, heading, _ in section.columns:
            table.add_column(heading, justify="right")
        table.add_column("spread", justify="right")
        for process in section.processes:
            table.add_column(f"{process} µs/op", justify="right")
        table.add_column("total µs/op", justify="right")
        for system in present:
            figures = summary[system]
            first = section.columns[0][0]
            values = sorted(r[first] for r in results[system] if first in r)
            spread = f"{values[0]:{section.columns[0][2]}} to {values[-1]:{section.columns[0][2]}}"
            table.add_row(
                system,
                *(
                    f"{figures[key]:{fmt}}" if key in figures else "-"
                    for key, _, fmt in section.columns
                ),
                spread if len(values) > 1 else "",
                *(
                    f"{figures[f'{section.prefix}.{p}_us']:.1f}"
                    if f"{section.prefix}.{p}_us" in figures
                    else "-"
                    for p in section.processes
                ),
                f"{cpu_total(figures, section.prefix):.1f}",
            )
        console.print(table)
        if section.ratios:
            ratios = Table(show_header=True, box=None, padding=(0, 2))
            for heading in ("ratio", "median of per-round", "rounds", "CPU/op ratio", "goal"):
                ratios.add_column(heading, justify="right" if heading != "ratio" else "left")
            for ratio in section.ratios:
                value = ratio.value(results)
                if value is None:
                    continue
                num_cpu = ratio.num_cpu or section.prefix
                den_cpu = ratio.den_cpu or section.prefix
                cpu = [
                    cpu_total(a, num_cpu) / cpu_total(b, den_cpu)
                    for a, b in zip(results[ratio.num], results[ratio.den], strict=False)
                    if cpu_total(b, den_cpu)
                ]
                cpu_ratio = statistics.median(cpu) if cpu else None
                label = ratio.label or f"{ratio.num} ÷ {ratio.den}, {ratio.key}"
                ratios.add_row(
                    label,
                    f"{value:.2f}x",
                    " ".join(f"{r:.2f}" for r in ratio.per_round(results)),
                    "" if cpu_ratio is None else f"{cpu_ratio:.2f}x",
                    ratio.verdict(results),
                )
                lines.append(
                    {
                        "section": section.title,
                        "ratio": label,
                        "median": value,
                        "per_round": ratio.per_round(results),
                        "cpu_ratio": cpu_ratio,
                        "goal": ratio.goal,
                        "at_most": ratio.at_most,
                        "met": None
                        if ratio.goal is None
                        else (value <= ratio.goal if ratio.at_most else value >= ratio.goal),
                    }
                )
            console.print(ratios)
        console.print()
    if note:
        console.print(note)
    return lines


def goals(console: Console, lines: list[dict[str, Any]], title: str = "Goals (issue 15)") -> None:
    """The goals, each with its measured ratio and met / not met."""
    table = Table(title=title, title_justify="left")
    for heading in ("goal", "measured", "verdict"):
        table.add_column(heading, justify="left" if heading == "goal" else "right")
    for line in lines:
        if line["goal"] is None:
            continue
        bound = "<=" if line["at_most"] else ">="
        table.add_row(
            f"{line['ratio']} {bound} {line['goal']:g}x",
            f"{line['median']:.2f}x",
            "[green]met[/]" if line["met"] else "[red]not met[/]",
        )
    if table.row_count:
        console.print(table)
    for note in sorted(_notes):
        console.print(note)


def dump(results: dict[str, dict[str, list[Figures]]], ratios: list[dict[str, Any]]) -> None:
    """``--json``: every round's figures, the medians and the ratios."""
    print(
        json.dumps(
            {
                "rounds": results,
                "medians": {name: medians(part) for name, part in results.items()},
                "ratios": ratios,
            },
            indent=2,
        )
    )


def console_for(args: Any) -> Console:
    # With --json the tables go to stderr, so stdout stays one JSON document.
    if getattr(args, "json", False):
        return Console(stderr=True, width=160)
    return Console(width=None if sys.stdout.isatty() else 160)
