"""The fault rig: bank instances in subprocesses, a retrying client, and the audit.

A scenario runs samples/bank in two (or more) subprocesses, drives a paced load of bank
commands (deposits, withdrawals, transfers), each with an idempotency key, from a client
that retries every retryable failure with the SAME key, injects one fault in the middle,
and then audits what the store and the models hold:

- every command that got a success reply is stored exactly once (found by the
  idempotency key in the event metadata, reading the whole store);
- no event is stored twice (ids, keys, and stream versions are all unique), and no key is
  both stored and refused (a refused keyed command leaves only its ``micro.CommandRefused``);
- the models of every instance equal a replay this module does itself from ``read_all``;
- the bank's invariants hold: no balance ever below zero, money conserved, and every
  transfer either completed (one debit, one credit) or failed (nothing, or a debit and
  its refund).

What each scenario measured becomes a row of ``FIGURES``, passed on in the test's report; the
suite's conftest prints the table at the end of the run and writes it to
``test-artifacts/faults.md``.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import itertools
import os
import random
import signal
import subprocess
import sys
import zlib
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats

from micro import Micro, MicroError, RetryPolicy, RuleViolation, Settings
from micro._nats_server import _die_with_parent
from micro.eventstore import EventStore, JetStreamEventStore, RecordedEvent
from micro.eventstore.esdb import EsdbEventStore
from micro.testing import NatsCluster
from micro.testing import wait_until as until
from micro.testing.partition import PartitionCluster

ROOT = Path(__file__).resolve().parents[2]
BANK_APP = ROOT / "samples" / "bank" / "app.py"
PASSWORD = "Correct-Horse-42-battery"

# samples/bank as it is, plus two views and its health on this instance only (their names
# carry the instance), so the test can ask each instance, not whichever the queue group picks.
BANK_SOURCE = f"""
import os, runpy
micro = runpy.run_path({str(BANK_APP)!r}, run_name="bank_sample")["micro"]
instance = os.environ["BANK_INSTANCE"]

def models_here(query, models):
    return {{
        "accounts": sorted(
            ({{"id": a.id, "owner": a.owner, "balance": a.balance}} for a in models.account.all()),
            key=lambda account: account["id"],
        ),
        "transfers": sorted(
            (t.model_dump(mode="json") for t in models.transfer.all()), key=lambda t: t["id"]
        ),
    }}

def balance_here(query, models):
    return models.account.require(query["id"]).balance

micro.add_view(f"bank models on {{instance}}", models_here)
micro.add_view(f"account balance on {{instance}}", balance_here)
micro.add(f"bank health on {{instance}}", micro.health)
micro.add(
    f"bank node on {{instance}}",
    lambda query: micro.client.connected_url.netloc if micro.client.connected_url else None,
)

async def announce(micro):
    print("ready", flush=True)

micro.hook("on_start", announce)
micro.start()
"""

BANK_ENVIRONMENT = {
    "MICRO_AUTH_SECRET": "a-secret-every-bank-instance-of-a-fault-test-shares-0123456789",
    "MICRO_AUTH_SECRET_CLAIMS_KEY": base64.b64encode(b"fault-suite-secret-claims-key-32").decode(),
    # test-only password hashing costs (the defaults take ~100 ms a hash)
    "MICRO_AUTH_HASH_TIME_COST": "1",
    "MICRO_AUTH_HASH_MEMORY_KIB": "8",
    "MICRO_AUTH_HASH_PARALLELISM": "1",
    "MICRO_LOG_LEVEL": "warning",
    "MICRO_LOG_FORMAT": "json",
    "MICRO_EMBEDDED": "false",
}

START_TIMEOUT = 30.0
STALLED = 60.0
"""Seconds the transfer process may go without advancing, after the load, before the audit
calls it stuck."""
ATTEMPT_TIMEOUT = 2.0
"""Seconds the client waits for one reply before it calls the attempt failed and retries."""
GIVE_UP_AFTER = 40.0
"""Seconds a command keeps being retried before the client gives up on it."""


class BankInstance:
    """samples/bank in a subprocess of its own, on the given NATS URL and namespace."""

    def __init__(
        self,
        name: str,
        url: str,
        namespace: str,
        workdir: Path,
        *,
        command_prefix: tuple[str, ...] = (),
        **env: str,
    ) -> None:
        self.name = name
        self.url = url
        self.namespace = namespace
        self.workdir = workdir
        self.command_prefix = command_prefix
        """Run through this (``ip netns exec NS``): the bank in a network namespace."""
        self.env = env
        self.log = workdir / f"{name}.log"
        self.process: subprocess.Popen[str] | None = None

    async def start(self) -> BankInstance:
        """Start the process and return once it serves (it prints ``ready``)."""
        process = self._launch()
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), START_TIMEOUT)
        except TimeoutError:
            line = ""
        if "ready" not in line:
            self.kill()
            raise RuntimeError(f"bank {self.name} did not start: {self.tail()}")
        return self

    def _launch(self) -> subprocess.Popen[str]:
        environment = {
            **os.environ,
            **BANK_ENVIRONMENT,
            "NATS_URL": self.url,
            "MICRO_NAMESPACE": self.namespace,
            "MICRO_DATA_DIR": str(self.workdir / "data"),
            "PYTHONPATH": str(ROOT),
            "BANK_INSTANCE": self.name,
            **self.env,
        }
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [*self.command_prefix, sys.executable, "-c", BANK_SOURCE],
                env=environment,
                stdout=subprocess.PIPE,
                stderr=log,  # a file, never a pipe: a chatty outage must not block the bank
                text=True,
                preexec_fn=_die_with_parent,  # no bank outlives a test run killed midway
            )
        return self.process

    def tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def rss(self) -> int:
        """Resident memory of the process, in bytes."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(kib) * 1024

    def pause(self) -> None:
        """SIGSTOP: a process that hangs (a long GC, a swapped-out host) with its sockets open."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """kill -9: no drain, no goodbye."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


# -- the load -------------------------------------------------------------------------------


@dataclass
class Command:
    """One bank command of the load and what became of it."""

    key: str
    name: str
    payload: dict[str, Any]
    attempts: int = 0
    failures: list[str] = field(default_factory=list)
    """Names of the retryable errors its attempts got before the last one."""
    outcome: str = "not sent"
    """acked, refused (a rule said no), gave up (still failing), error (not retryable)."""
    position: int | None = None
    error: str = ""


def bank_load(accounts: list[str], count: int, seed: int) -> list[Command]:
    """``count`` commands over ``accounts``: deposits, withdrawals and transfers."""
    rng = random.Random(seed)
    commands = []
    for number in range(count):
        roll = rng.random()
        key = f"load-{seed}-{number}"
        if roll < 0.45:
            payload = {"id": rng.choice(accounts), "amount": rng.randint(1, 50)}
            commands.append(Command(key, "deposit", payload))
        elif roll < 0.8:
            payload = {"id": rng.choice(accounts), "amount": rng.randint(1, 80)}
            commands.append(Command(key, "withdraw", payload))
        else:
            source, target = rng.sample(accounts, 2)
            payload = {
                "id": f"t{seed}-{number}",
                "source": source,
                "target": target,
                "amount": rng.randint(1, 150),
            }
            commands.append(Command(key, "transfer", payload))
    return commands


class Driver:
    """Sends commands from ``concurrency`` workers and retries retryable failures with the key.

    The workers send as fast as the bank answers, so at any moment some commands are in
    flight: a fault always hits some. The client never retries behind our back (its retry
    policy is one attempt), so every retry is counted here. Bounded: a command is given up
    after ``GIVE_UP_AFTER`` seconds, and the load stops sending at its deadline.
    """

    def __init__(
        self,
        client: Micro,
        meta: dict[str, Any],
        *,
        min_position: int = 0,
        concurrency: int = 16,
        attempt_timeout: float = ATTEMPT_TIMEOUT,
        entries: Sequence[Micro] = (),
    ) -> None:
        self.client = client
        self.clients = [client, *entries]
        """Where attempts enter: a retry goes through the next one (another NATS node)."""
        self.meta = meta
        self.min_position = min_position
        """Every command waits for this position on the instance serving it (what the
        client has seen so far: its login, the accounts it opened)."""
        self.concurrency = concurrency
        self.attempt_timeout = attempt_timeout
        self.finished = False
        """The load is over: every command done, or the budget spent."""
        self.acks: list[tuple[float, float]] = []
        """(sent at, acknowledged at) of every attempt that got a success reply."""
        for command in ("deposit", "withdraw", "transfer", "open account"):
            for entry in self.clients:
                entry.retry(command, RetryPolicy(attempts=1))

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def run(self, commands: list[Command], budget: float = 90.0, pace: float = 0.0) -> None:
        """Send every command until all are done or ``budget`` seconds have passed.

        ``pace``: seconds each worker waits between two commands (a load spread over time).
        """
        deadline = self.now() + budget
        pending = collections.deque(commands)

        async def worker() -> None:
            while pending and self.now() < deadline:
                await self.execute(pending.popleft())
                if pace:
                    await asyncio.sleep(pace)  # the load's own rhythm, not a wait for anything

        try:
            await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        finally:
            self.finished = True

    async def execute(self, command: Command) -> None:
        """Send ``command`` until it succeeds, a rule refuses it, or it is given up."""
        first = self.now()
        while True:
            command.attempts += 1
            sent = self.now()
            entry = zlib.crc32(command.key.encode()) + command.attempts
            client = self.clients[entry % len(self.clients)]
            try:
                reply = await client.request(
                    command.name,
                    command.payload,
                    meta=self.meta,
                    idempotency_key=command.key,
                    timeout=self.attempt_timeout,
                    min_position=self.min_position,
                )
            except RuleViolation as refused:
                command.outcome, command.error = "refused", str(refused)
                return
            except MicroError as error:
                if not error.retryable:
                    command.outcome, command.error = "error", f"{type(error).__name__}: {error}"
                    return
                if self.now() - first > GIVE_UP_AFTER:
                    command.outcome, command.error = "gave up", f"{type(error).__name__}: {error}"
                    return
                command.failures.append(type(error).__name__)
                # a short jittered backoff before the retry, as any sensible client does
                await asyncio.sleep(random.uniform(0, min(0.5, 0.02 * 2 ** len(command.failures))))
                continue
            except Exception as error:  # anything else is a bug in micro's error translation
                command.outcome, command.error = "error", f"{type(error).__name__}: {error}"
                return
            command.outcome = "acked"
            command.position = reply.position
            self.acks.append((sent, self.now()))
            return

    def acked_since(self, moment: float) -> int:
        return sum(1 for _, acked in self.acks if acked >= moment)

    def recovery(self, fault_at: float) -> float:
        """Seconds from the fault to the first success of an attempt sent after it."""
        after = [acked for sent, acked in self.acks if sent >= fault_at]
        return min(after) - fault_at if after else float("inf")

    def longest_stall(self) -> float:
        """The longest time, while the load ran, without any success reply."""
        times = sorted(acked for _, acked in self.acks)
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def stream_of(namespace: str) -> str:
    return f"{namespace.upper()}_EVENTS"


async def replicas_caught_up(cluster: NatsCluster, stream: str) -> bool:
    """True when the stream has a leader and every other replica is current."""
    client = await nats.connect(
        servers=cluster.urls.split(","), connect_timeout=2, max_reconnect_attempts=0
    )
    try:
        info: Any = await client.jetstream().stream_info(stream)
    except Exception:
        return False
    finally:
        await client.close()
    peers = info.cluster.replicas or []
    return bool(info.cluster.leader) and len(peers) == 2 and all(p.current for p in peers)


# -- setting up -----------------------------------------------------------------------------


async def log_in(client: Micro, login: str = "ann") -> tuple[dict[str, Any], int]:
    """Sign a customer up and log in: the meta that carries the token, and the position
    later commands pass as ``min_position`` (whichever instance serves them knows the user)."""
    signed_up = await client.request(
        "auth signup",
        {
            "name": login.title(),
            "login": login,
            "password": PASSWORD,
            "password_confirmation": PASSWORD,
        },
        timeout=10,
    )
    logged_in = await client.request(
        "auth login",
        {"login": login, "password": PASSWORD, "device": "faults"},
        timeout=10,
        min_position=signed_up.position,
    )
    assert logged_in.position is not None
    return {"token": logged_in.value["token"]}, logged_in.position


async def open_accounts(driver: Driver, accounts: list[str], deposit: int) -> None:
    """Open each account with an initial deposit (keyed commands, retried like the load)."""
    setup = [Command(f"open-{a}", "open account", {"id": a, "owner": "ann"}) for a in accounts]
    setup += [Command(f"fund-{a}", "deposit", {"id": a, "amount": deposit}) for a in accounts]
    for command in setup:
        await driver.execute(command)
        assert command.outcome == "acked", (command.key, command.outcome, command.error)
        assert command.position is not None
        driver.min_position = command.position  # the next command needs this account


# -- the audit ------------------------------------------------------------------------------


@dataclass
class Replay:
    """The bank's models as a replay of the stored events builds them (no reducer reused)."""

    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    transfers: dict[str, dict[str, Any]] = field(default_factory=dict)
    negative: list[str] = field(default_factory=list)
    """Events after which a balance was below zero."""

    def apply(self, event: RecordedEvent) -> None:
        data = event.data
        if event.type == "AccountOpened":
            self.accounts[data["id"]] = {"id": data["id"], "owner": data["owner"], "balance": 0}
        elif event.type in ("Deposited", "Withdrawn"):
            sign = 1 if event.type == "Deposited" else -1
            account = self.accounts[data["id"]]
            account["balance"] += sign * data["amount"]
            if account["balance"] < 0:
                self.negative.append(f"{event.position}: {data['id']} at {account['balance']}")
        elif event.type == "TransferRequested":
            self.transfers[data["id"]] = {**data, "status": "requested", "reason": ""}
        elif event.type == "TransferDebited":
            self.transfers[data["id"]]["status"] = "debited"
        elif event.type == "TransferCompleted":
            self.transfers[data["id"]]["status"] = "completed"
        elif event.type == "TransferFailed":
            self.transfers[data["id"]].update(status="failed", reason=data["reason"])

    def models(self) -> dict[str, Any]:
        """The same shape the instances' ``bank models on <instance>`` view answers."""
        return {
            "accounts": [self.accounts[key] for key in sorted(self.accounts)],
            "transfers": [self.transfers[key] for key in sorted(self.transfers)],
        }


@dataclass
class Audit:
    """What the whole store says about a load."""

    events: list[RecordedEvent]
    replay: Replay
    by_key: dict[str, list[RecordedEvent]]
    """The events of each keyed command that was stored (refusals are not)."""
    refused: dict[str, list[RecordedEvent]]
    """The ``micro.CommandRefused`` events of each keyed command that was refused."""
    duplicated: list[str]
    """Keys stored (or refused) more than once, or both stored and refused; event ids
    stored more than once; versions repeated."""

    @property
    def last_position(self) -> int:
        return self.events[-1].position if self.events else 0


def open_store(url: str, namespace: str, replicas: int, esdb_url: str | None = None) -> EventStore:
    """The store the banks of a scenario write to: JetStream, or EventStoreDB at ``esdb_url``."""
    if esdb_url is not None:
        return EsdbEventStore(esdb_url)
    return JetStreamEventStore(url=url, namespace=namespace, replicas=replicas)


async def quiet(
    client: Micro,
    banks: list[BankInstance],
    url: str,
    namespace: str,
    replicas: int,
    esdb_url: str | None = None,
) -> None:
    """Wait until the transfer process of every bank handled every stored event.

    A group's position passes an event only once its handler is done, and the handlers'
    own commands add events: when every group stands at the store's last position, the
    process has nothing left to do (a transfer can look settled while a run that lost
    the settle still has its refund to make).
    """
    async with open_store(url, namespace, replicas, esdb_url) as store:
        seen: dict[str, Any] = {}
        """What each instance said last, for the failure's message."""
        loop = asyncio.get_running_loop()
        started = progress_at = loop.time()
        best = -1

        async def handled_everything() -> bool:
            nonlocal best, progress_at
            seen["store"] = last = await store.last_position()
            positions = 0
            for bank in banks:
                try:
                    health = await client.act(f"bank health on {bank.name}", timeout=5)
                except MicroError as error:
                    seen[bank.name] = f"{type(error).__name__}: {error}"
                    if error.retryable:
                        return False
                    raise
                group = seen[bank.name] = health["event_handlers"]["bank"]
                assert group["status"] == "ok", f"{bank.name}: {group['reason']}"
                positions += group["position"]
            if positions > best:
                best, progress_at = positions, loop.time()
            assert loop.time() - progress_at < STALLED, (
                f"the transfer process made no progress for {STALLED:.0f} s: {seen}"
            )
            return all(seen[bank.name]["position"] == last for bank in banks)

        # A long load leaves the process a backlog (it handles one event at a time, each
        # with commands of its own): it may take its time, but must keep advancing.
        await until(handled_everything, 900, "the transfer process to finish")
        finished = loop.time() - started
        if finished > 5:
            print(f"the transfer process finished {finished:.0f} s after the load", flush=True)


async def read_store(
    url: str, namespace: str, replicas: int, esdb_url: str | None = None
) -> list[RecordedEvent]:
    async with open_store(url, namespace, replicas, esdb_url) as store:
        return [event async for event in store.read_all()]


def audit(events: list[RecordedEvent]) -> Audit:
    replay = Replay()
    by_key: dict[str, list[RecordedEvent]] = collections.defaultdict(list)
    refused: dict[str, list[RecordedEvent]] = collections.defaultdict(list)
    duplicated = []
    ids = collections.Counter(event.id for event in events)
    duplicated += [f"event id {event_id} x{n}" for event_id, n in ids.items() if n > 1]
    versions: dict[str, int] = {}
    for event in events:
        replay.apply(event)
        key = event.metadata.get("idempotency_key")
        if isinstance(key, str):
            (refused if event.type == "micro.CommandRefused" else by_key)[key].append(event)
        expected = versions.get(event.stream, -1) + 1
        if event.version != expected:
            duplicated.append(f"{event.stream} v{event.version} where v{expected} was due")
        versions[event.stream] = event.version
    duplicated += [f"key {key} x{len(found)}" for key, found in by_key.items() if len(found) > 1]
    duplicated += [
        f"refusal {key} x{len(found)}" for key, found in refused.items() if len(found) > 1
    ]
    duplicated += [f"key {key} stored and refused" for key in refused if key in by_key]
    return Audit(events, replay, dict(by_key), dict(refused), duplicated)


def check_transfers(found: Audit) -> list[str]:
    """Each transfer either completed (debit + credit) or failed (nothing, or debit + refund)."""
    problems = []
    for transfer in found.replay.transfers.values():
        key = f"transfer-{transfer['id']}"
        steps = {step for step in ("debit", "credit", "refund") if f"{key}-{step}" in found.by_key}
        status = transfer["status"]
        if status == "completed" and steps != {"debit", "credit"}:
            problems.append(f"{transfer['id']} completed with steps {sorted(steps)}")
        elif status == "failed" and steps not in (set(), {"debit", "refund"}):
            problems.append(f"{transfer['id']} failed with steps {sorted(steps)}")
        elif status not in ("completed", "failed"):
            problems.append(f"{transfer['id']} left {status}")
    return problems


@dataclass
class Figures:
    """One row of the fault table."""

    scenario: str
    sent: int
    acknowledged: int
    refused: int
    retried: int
    attempts_failed: int
    lost: int
    duplicated: int
    gave_up: int
    recovery: float
    stall: float

    HEADER = (
        "| scenario | commands sent | acknowledged | refused by a rule | retried after a "
        "retryable error (failed attempts) | lost | duplicated | gave up | commands succeed "
        "again after | longest stall |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )

    def row(self) -> str:
        return (
            f"| {self.scenario} | {self.sent} | {self.acknowledged} | {self.refused} | "
            f"{self.retried} ({self.attempts_failed}) | {self.lost} | {self.duplicated} | "
            f"{self.gave_up} | {self.recovery:.2f} s | {self.stall:.2f} s |"
        )


FIGURES: list[Figures] = []
"""The rows of this process, in the order the scenarios ran."""
FIGURES_PROPERTY = "fault figures"
"""The name a test's rows take in its report's ``user_properties``, as dicts of the fields."""


def table(rows: list[dict[str, Any]]) -> str:
    return "\n".join([Figures.HEADER, *(Figures(**row).row() for row in rows)])


@dataclass
class Scenario:
    """A bank under load on one NATS deployment; ``fault`` is injected mid-load."""

    name: str
    url: str
    namespace: str
    workdir: Path
    replicas: int = 1
    esdb_url: str | None = None
    """Keep events in EventStoreDB there (``MICRO_EVENT_STORE=esdb``) instead of JetStream."""
    instances: int = 2
    accounts: int = 8
    commands: int = 400
    funding: int = 100
    seed: int = 1
    concurrency: int = 16
    pace: float = 0.0
    """Seconds each of the ``concurrency`` callers waits between two commands."""
    budget: float = 90.0
    """Seconds the load may take before the callers stop sending."""
    entry_urls: list[str] = field(default_factory=list)
    """More NATS URLs the load enters by, besides ``url`` (one client each)."""
    banks: list[BankInstance] = field(default_factory=list)
    driver: Driver | None = None
    load: list[Command] = field(default_factory=list)
    fault_at: float = 0.0

    def settings(self) -> Settings:
        return Settings(nats_url=self.url, namespace=self.namespace, embedded=False)

    def bank(self, name: str) -> BankInstance:
        store = {"MICRO_EVENT_STORE_REPLICAS": str(self.replicas)}
        if self.esdb_url is not None:
            store = {"MICRO_EVENT_STORE": "esdb", "MICRO_EVENT_STORE_URL": self.esdb_url}
        return BankInstance(name, self.url, self.namespace, self.workdir, **store)

    async def start_banks(self) -> None:
        self.banks = [self.bank(f"b{n + 1}") for n in range(self.instances)]
        await asyncio.gather(*(bank.start() for bank in self.banks))

    def stop_banks(self) -> None:
        for bank in self.banks:
            bank.stop()

    async def run(self, fault: Callable[[Scenario], Awaitable[None]]) -> Figures:
        """Start the banks, load them, inject ``fault`` a quarter in, then audit."""
        await self.start_banks()
        async with AsyncExitStack() as stack:
            client = await stack.enter_async_context(Micro(self.settings(), request_timeout=10))
            entries = [
                await stack.enter_async_context(
                    Micro(self.settings().model_copy(update={"nats_url": url}))
                )
                for url in self.entry_urls
            ]
            meta, position = await log_in(client)
            driver = self.driver = Driver(
                client, meta, min_position=position, entries=entries, concurrency=self.concurrency
            )
            accounts = [f"a{n}" for n in range(self.accounts)]
            await open_accounts(driver, accounts, self.funding)
            self.load = bank_load(accounts, self.commands, self.seed)
            loading = asyncio.create_task(driver.run(self.load, self.budget, self.pace))
            try:
                await until(
                    lambda: len(driver.acks) >= len(accounts) * 2 + self.commands // 4,
                    30,
                    "a quarter of the load",
                )
                self.fault_at = driver.now()
                await fault(self)
            finally:
                await loading
            figures = await self.check(client, accounts)
        FIGURES.append(figures)
        return figures

    async def check(self, client: Micro, accounts: list[str]) -> Figures:
        """The audit; raises ``AssertionError`` on the first broken promise."""
        driver = self.driver
        assert driver is not None
        outcomes = collections.Counter(command.outcome for command in self.load)
        errors = [(c.key, c.error) for c in self.load if c.outcome in ("error", "not sent")]
        assert not errors, f"commands that ended in a non-retryable error or unsent: {errors[:5]}"
        acked = [c for c in self.load if c.outcome == "acked"]
        live = [bank for bank in self.banks if bank.running]
        await quiet(client, live, self.url, self.namespace, self.replicas, self.esdb_url)
        found = audit(await read_store(self.url, self.namespace, self.replicas, self.esdb_url))
        lost = [c.key for c in acked if c.key not in found.by_key]
        misplaced = [
            c.key
            for c in acked
            if c.key in found.by_key and found.by_key[c.key][-1].position != c.position
        ]
        refused_but_stored = [
            c.key for c in self.load if c.outcome == "refused" and c.key in found.by_key
        ]
        assert not lost, f"acknowledged commands not stored: {lost[:10]}"
        assert not misplaced, f"acknowledged at another position than stored: {misplaced[:10]}"
        assert not refused_but_stored, f"refused commands stored: {refused_but_stored[:10]}"
        assert not found.duplicated, f"stored twice: {found.duplicated[:10]}"
        assert not found.replay.negative, f"negative balances: {found.replay.negative[:10]}"
        assert not check_transfers(found), check_transfers(found)[:10]
        # Money: the client's own ledger of what was acknowledged says what must be there.
        gave_up = [c for c in self.load if c.outcome == "gave up"]
        assert not gave_up, f"commands given up: {[(c.key, c.error) for c in gave_up[:5]]}"
        moved = sum(
            c.payload["amount"] * (1 if c.name == "deposit" else -1)
            for c in acked
            if c.name in ("deposit", "withdraw")
        )
        expected_total = self.funding * len(accounts) + moved
        replayed = found.replay.models()
        assert sum(a["balance"] for a in replayed["accounts"]) == expected_total
        # Every live instance's models, once they applied the last event, equal the replay.
        for bank in live:
            served = await client.act(
                f"bank models on {bank.name}", min_position=found.last_position, timeout=15
            )
            assert served == replayed, f"instance {bank.name} differs from a fresh replay"
        retried = [c for c in self.load if c.failures]
        return Figures(
            scenario=self.name,
            sent=len(self.load),
            acknowledged=outcomes["acked"],
            refused=outcomes["refused"],
            retried=len(retried),
            attempts_failed=sum(len(c.failures) for c in retried),
            lost=len(lost),
            duplicated=len(found.duplicated),
            gave_up=len(gave_up),
            recovery=driver.recovery(self.fault_at),
            stall=driver.longest_stall(),
        )


@dataclass
class PartitionScenario(Scenario):
    """A ``Scenario`` on a ``PartitionCluster``: each bank instance runs in a namespace of its
    own linked to every node (so links can be cut), and the load enters through every node,
    one client per node, each retry through the next, as a caller behind a load balancer
    would. The test process reaches the nodes through loopback forwarders, never cut."""

    cluster: PartitionCluster | None = None
    bank_urls: dict[str, str] = field(default_factory=dict)
    """A bank's own ``NATS_URL`` (the nodes it knows of), instead of every node."""

    def __post_init__(self) -> None:
        assert self.cluster is not None
        self.url = self.cluster.urls
        self.entry_urls = self.cluster.client_urls(running_only=False)
        self.replicas = 3

    def bank(self, name: str) -> BankInstance:
        cluster = self.cluster
        assert cluster is not None
        host = cluster.network.hosts.get(name) or cluster.add_client(name)
        return BankInstance(
            name,
            self.bank_urls.get(name, cluster.inner_urls),
            self.namespace,
            self.workdir,
            command_prefix=host.command_prefix,
            MICRO_EVENT_STORE_REPLICAS=str(self.replicas),
        )
