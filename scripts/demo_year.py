"""The demonstration year: one performance year of value-based payments, run as
signed transactions against a live CareLedger cluster.

    python scripts/demo_year.py --nodes URL[,URL…] --accounts DIR [--members N] [--seed S] [--out DIR]

`DIR` is the `accounts/` directory of `careledger testnet --demo` (one admin
key per organisation: payer-a, payer-b, pcp-group, hospital, therapy-clinic,
auditor, regulator). `--nodes` lists every node (validators receive the
transactions; every node, observers included, is compared at the end).
`scripts/demo.py` calls `run_year()` on a cluster it starts itself.

The year (performance year 2025, a seeded synthetic population — `random.Random(seed)`
lives here in scripts, never in contracts/):

1. Set-up: staff keys (governance), TINs and NPIs (providers), licences
   attested by the auditor, the MSSP program and its ACO with participants,
   quality measures, the MSSP and BPCI Advanced payment programs signed by
   their participants, the MSSP benchmark record the payer sets (`benchmark_set`), the knee-replacement episode definition, and two payers'
   benefit plans sharing one PT/OT/chiropractic visit pool.
2. Members: pseudonymous patients, coverage months, a year of adjudicated
   claims (primary care inside and outside the ACO, specialists, outpatient
   and inpatient care).
3. Bundles: knee replacements (MS-DRG 469/470) opened by the hospital with
   milestone payments, their inpatient stays and post-acute therapy claims.
4. Therapy: PT/OT/chiropractic visits adjudicated by payer A (primary) and,
   for members also covered by payer B, by payer B as secondary (NAIC COB);
   the shared visit limit holds across both payers.
5. Year end: quality results and composites, attribution runs, total cost of
   care of the assigned population walked on-ledger in pages (`tcoc_open`,
   `tcoc_accumulate`, `tcoc_close`), the ACO participants' revenue from the
   claims under their TINs, also in pages (`revenue_open`, `revenue_accumulate`,
   `revenue_close`), the quality performance standard
   (`quality_standard_assess`), episode spending, the MSSP settlement derived by
   the contract from those records (cited by `{key, hash}`),
   its disbursement, and the BPCI Advanced reconciliation.

Every step is a signed transaction through the cluster's HTTP API (`POST /txs`
batches when the node offers it, else `POST /tx` from a few threads), and the
script waits for each wave's commits via `GET /tx/{hash}`. Failed receipts are
counted and listed. Prints a settlement report (rich tables) and writes
`cumulative_spending.png` (matplotlib, Agg) into `--out`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Iterable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import httpx  # noqa: E402
import random  # noqa: E402  (scripts only: the synthetic population is seeded)

from contracts.state import key as state_key  # noqa: E402
from ledger import codec  # noqa: E402
from ledger.crypto import PrivateKey  # noqa: E402
from ledger.types import Tx  # noqa: E402
from node.cli import next_nonces  # noqa: E402
from node.keys import generate_private_key, load_key_file  # noqa: E402

YEAR = 2025
PERIOD_START, PERIOD_END = 20250101, 20251231
MSSP_PROGRAM = "mssp-2025"
ACO_ID = "aco-northside"
BPCI_PROGRAM = "bpci-knee-2025"
BPCI_CATEGORY = "major-joint-lower-extremity"
EPISODE_DEF = "mjrle-90"
COMPOSITE = "aco-quality-2025"
PLAN_A, PLAN_B = "pa-ppo-2025", "pb-ppo-2025"
THERAPY_POOL = "ptotchiro_2025"
THERAPY_VISIT_LIMIT = 20
# The MSSP benchmark's components (per capita, cents): BY1..BY3 weighted 10/30/60, a regional
# adjustment and the update factor → about $11,600 per assigned member-year.
BENCHMARK_BY_CENTS = [1_080_000, 1_110_000, 1_130_000]
BENCHMARK_REGIONAL_CENTS = 15_000
BENCHMARK_UPDATE_FACTOR = [10_230, 10_000]
KNEE_BENCHMARK_CENTS = 2_850_000  # BPCI-A benchmark price per episode ($28,500); target = 97 %
TCOC_PAGE = 500  # members per tcoc_accumulate (contracts.tcoc.MAX_PAGE is 1,000)
REVENUE_PAGE = 500  # claims per revenue_accumulate (contracts.tcoc.MAX_PAGE is 1,000)
TCOC_TRUNCATION_CENTS = 25_000_000
ATTRIBUTION_BATCH = 1_500  # under MAX_PATIENTS_PER_RUN (2,000) and the 64 KiB tx limit
DEFAULT_MEMBERS = 5_000

HTTP_ATTEMPTS = 4


def _with_retries(request: Callable[[], httpx.Response]) -> httpx.Response:
    """Retry a request whose connection dropped (a busy node on a 2-core machine
    can reset one); reads are idempotent and a resent batch is deduplicated."""
    for attempt in range(HTTP_ATTEMPTS):
        try:
            return request()
        except httpx.TransportError:
            if attempt == HTTP_ATTEMPTS - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")
NONCE_WINDOW = 60  # < the mempool's default nonce_window (64)
BATCH_CHUNK = 1_000  # txs per POST /txs
COMMIT_TIMEOUT_S = 120.0
PAYER_A_STAFF = 12
PAYER_B_STAFF = 2
DEMO_ORGS = ("payer-a", "payer-b", "pcp-group", "hospital", "therapy-clinic", "auditor", "regulator")


class DemoError(RuntimeError):
    """The demonstration cannot go on (a cluster problem, or a failed step others depend on)."""


# ----------------------------------------------------------------- identifiers


def luhn_npi(nine: str) -> str:
    """A valid NPI from 9 digits: Luhn check digit over 80840 + the digits (METHODS §1.9)."""
    total = 0
    for position, char in enumerate(reversed("80840" + nine)):
        digit = int(char)
        if position % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return nine + str((10 - total % 10) % 10)


def commitment(*parts: Any) -> bytes:
    """A stand-in for a salted document commitment (32 bytes)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()


def day_of_year(rng: random.Random, lo: int = 1, hi: int = 365) -> int:
    """A yyyymmdd date in 2025 (day lo..hi of the year)."""
    return add_days(PERIOD_START, rng.randint(lo, hi) - 1)


def add_days(date: int, days: int) -> int:
    import datetime

    d = datetime.date(date // 10000, date // 100 % 100, date % 100) + datetime.timedelta(days=days)
    return d.year * 10000 + d.month * 100 + d.day


# ----------------------------------------------------------------- the cluster client


@dataclass
class Signer:
    name: str
    org: str
    key: PrivateKey
    nonce: int = 0  # next nonce to use

    @property
    def public_key(self) -> bytes:
        return self.key.public_key


@dataclass
class Step:
    """One transaction to send: who signs, its type and body, and a label for the report."""

    signer: Signer
    type: str
    body: dict[str, Any]
    label: str = ""


@dataclass
class Outcome:
    step: Step
    tx_hash: str
    ok: bool
    height: int | None
    code: str | None = None
    message: str | None = None
    events: list[Any] = field(default_factory=list)


class Ledger:
    """Signs, submits and follows transactions on a running cluster."""

    def __init__(self, urls: list[str], workers: int = 8, log: Callable[[str], None] = print) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        self.log = log
        self.client = httpx.Client(timeout=30.0, limits=httpx.Limits(max_connections=32))
        statuses = {u: self.client.get(u + "/status").json() for u in self.urls}
        self.chain_id = next(iter(statuses.values()))["chain_id"]
        self.validators = [u for u, s in statuses.items() if s.get("role", "validator") == "validator"]
        if not self.validators:
            raise DemoError("no validator among --nodes: transactions need one")
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
        self.outcomes: list[Outcome] = []
        self.batch_route = self._probe_batch_route()
        self.submitted = 0
        self._rr = 0

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    def _probe_batch_route(self) -> bool:
        try:
            response = self.client.post(self.validators[0] + "/txs", content=codec.encode([]),
                                        headers={"content-type": "application/msgpack"})
        except httpx.HTTPError:
            return False
        return response.status_code not in (404, 405)

    def signer(self, name: str, org: str, key: PrivateKey) -> Signer:
        nonce = next_nonces(self.client_for(self.validators[0]), [key.public_key])[key.public_key]
        return Signer(name, org, key, nonce)

    def client_for(self, url: str) -> httpx.Client:
        return httpx.Client(base_url=url, timeout=30.0)

    # -- reads
    def state(self, k: bytes, url: str | None = None) -> bytes | None:
        response = _with_retries(lambda: self.client.get((url or self.validators[0]) + "/state/" + k.hex()))
        response.raise_for_status()
        value = response.json().get("value")
        return None if value is None else bytes.fromhex(value)

    def state_value(self, k: bytes) -> Any:
        raw = self.state(k)
        return None if raw is None else codec.decode(raw)

    def reference(self, k: bytes) -> dict[str, Any]:
        """`{key, hash}` of a ledger record, as settlements cite their inputs."""
        raw = self.state(k)
        if raw is None:
            raise DemoError("no ledger record at %s" % k.decode())
        return {"key": k.decode(), "hash": hashlib.sha256(raw).digest()}

    def sync(self, signer: Signer, to: bytes) -> None:
        """Make the latest writes readable: `GET /state` answers at the last *certified*
        version (tip − 1) and an idle cluster makes no empty blocks, so commit one more
        block (a 1-cent transfer) after the writes we want to read."""
        self.run([Step(signer, "transfer", {"to": to, "amount": 1}, "sync")], "", quiet=True)

    def states(self, keys: list[bytes]) -> list[Any]:
        return list(self.pool.map(self.state_value, keys))

    # -- writes
    def run(self, steps: list[Step], title: str, quiet: bool = False) -> list[Outcome]:
        """Send `steps` (each signer's in list order), wave by wave so that no signer has
        more than NONCE_WINDOW uncommitted; return every outcome once committed.
        Steps of different signers have no order: callers put dependent steps in a later run."""
        if not steps:
            return []
        started = time.monotonic()
        queues: dict[str, list[Step]] = defaultdict(list)
        for step in steps:
            queues[step.signer.name].append(step)
        results: list[Outcome] = []
        while any(queues.values()):
            wave: list[tuple[Step, bytes, str]] = []
            for name in list(queues):
                take, queues[name] = queues[name][:NONCE_WINDOW], queues[name][NONCE_WINDOW:]
                for step in take:
                    tx = Tx(self.chain_id, step.signer.public_key, step.signer.nonce, step.type, step.body)
                    step.signer.nonce += 1
                    raw = tx.signed(step.signer.key).encode()
                    wave.append((step, raw, hashlib.sha256(raw).hexdigest()))
            self._submit(wave)
            results.extend(self._await(wave))
        failed = sum(not o.ok for o in results)
        self.outcomes.extend(results)
        elapsed = time.monotonic() - started
        if not quiet:
            self.log("  %-44s %6d txs  %5.1f s  %6.0f tx/s  failed %d" % (
            title, len(results), elapsed, len(results) / max(elapsed, 1e-9), failed))
        return results

    def _next_validator(self) -> str:
        self._rr = (self._rr + 1) % len(self.validators)
        return self.validators[self._rr]

    def _submit(self, wave: list[tuple[Step, bytes, str]]) -> None:
        self.submitted += len(wave)
        if self.batch_route:
            for i in range(0, len(wave), BATCH_CHUNK):
                chunk = wave[i:i + BATCH_CHUNK]
                url = self._next_validator()
                body = codec.encode([raw for _, raw, _ in chunk])
                response = _with_retries(lambda: self.client.post(
                    url + "/txs", content=body, headers={"content-type": "application/msgpack"}))
                if response.status_code != 200:
                    raise DemoError("POST /txs: %d %s" % (response.status_code, response.text[:300]))
                for (step, _, _), result in zip(chunk, response.json()["results"]):
                    # a resent batch after a dropped connection finds its txs already admitted
                    if "error" in result and result["error"] != "duplicate":
                        raise DemoError("%s refused at admission: %s %s" % (step.type, result["error"],
                                                                              result.get("detail")))
            return

        def post(item: tuple[Step, bytes, str], url: str) -> None:
            step, raw, _ = item
            response = self.client.post(url + "/tx", content=raw, headers={"content-type": "application/octet-stream"})
            if response.status_code != 200:
                raise DemoError("%s refused at admission: %d %s" % (step.type, response.status_code, response.text[:300]))

        # one signer's txs go to one node in nonce order (a node admits nonces in its window only)
        by_signer: dict[str, list[tuple[Step, bytes, str]]] = defaultdict(list)
        for item in wave:
            by_signer[item[0].signer.name].append(item)

        def post_all(items: list[tuple[Step, bytes, str]], url: str) -> None:
            for item in items:
                post(item, url)

        futures = [self.pool.submit(post_all, items, self._next_validator()) for items in by_signer.values()]
        for future in futures:
            future.result()

    def _await(self, wave: list[tuple[Step, bytes, str]]) -> list[Outcome]:
        deadline = time.monotonic() + COMMIT_TIMEOUT_S
        found: dict[str, dict[str, Any]] = {}
        pending = [h for _, _, h in wave]

        def probe(tx_hash: str) -> tuple[str, dict[str, Any] | None]:
            response = _with_retries(lambda: self.client.get(self.validators[0] + "/tx/" + tx_hash))
            if response.status_code == 200 and response.json().get("status") == "committed":
                return tx_hash, response.json()
            return tx_hash, None

        # a signer's txs commit in nonce order: wait for each signer's last one, then read every receipt
        last: dict[str, str] = {}
        for step, _, tx_hash in wave:
            last[step.signer.name] = tx_hash
        waiting = list(last.values())
        delay = 0.05
        while waiting:
            for tx_hash, answer in self.pool.map(probe, waiting):
                if answer is not None:
                    found[tx_hash] = answer
            waiting = [h for h in waiting if h not in found]
            if not waiting:
                break
            if time.monotonic() > deadline:
                raise DemoError("%d transactions not committed within %.0f s" % (len(waiting), COMMIT_TIMEOUT_S))
            time.sleep(delay)
            delay = min(delay * 1.5, 0.3)
        while pending:
            for tx_hash, answer in self.pool.map(probe, [h for h in pending if h not in found]):
                if answer is not None:
                    found[tx_hash] = answer
            pending = [h for h in pending if h not in found]
            if not pending:
                break
            if time.monotonic() > deadline:
                raise DemoError("%d transactions not committed within %.0f s" % (len(pending), COMMIT_TIMEOUT_S))
            time.sleep(0.1)
        outcomes = []
        for step, _, tx_hash in wave:
            answer = found[tx_hash]
            receipt = answer.get("receipt") or {}
            outcomes.append(Outcome(step, tx_hash, bool(receipt.get("ok")), answer.get("height"),
                                    receipt.get("code"), receipt.get("message"), receipt.get("events") or []))
        return outcomes


def require_ok(outcomes: list[Outcome], what: str) -> None:
    bad = [o for o in outcomes if not o.ok]
    if bad:
        first = bad[0]
        raise DemoError("%s failed (%d): %s %s: %s %s" % (what, len(bad), first.step.type, first.step.label,
                                                         first.code, first.message))


# ----------------------------------------------------------------- the synthetic world


@dataclass
class Clinician:
    npi: str
    name: str
    taxonomy: str
    org: str
    tin: str


@dataclass
class Member:
    pseudonym: bytes
    pcp: Clinician | None
    age: int
    sex: str
    diabetic: bool
    hypertensive: bool
    knee: bool = False
    therapy_visits: list[tuple[int, str, str]] = field(default_factory=list)  # (date, category, hcpcs)
    payer_b: bool = False
    claims: list[dict[str, Any]] = field(default_factory=list)
    knee_dates: tuple[int, int, int] | None = None  # admission, surgery, discharge

    @property
    def pid(self) -> str:
        return "pt-" + self.pseudonym.hex()


@dataclass
class World:
    members: list[Member]
    aco_pcps: list[Clinician]
    outside_pcps: list[Clinician]
    specialists: list[Clinician]
    surgeons: list[Clinician]
    therapists: list[Clinician]
    organisations: dict[str, Clinician]  # org id -> organisation NPI record (billing)
    tins: dict[str, str]  # name -> tin


THERAPY = (("pt", "97110"), ("pt", "97140"), ("ot", "97530"), ("ot", "97535"), ("chiro", "98940"), ("chiro", "98941"))


def build_world(members: int, seed: int) -> World:
    """A seeded synthetic population and its providers; every amount in integer cents."""
    rng = random.Random(seed)
    npi_counter = iter(range(100_000_001, 199_999_999, 7919))

    def clinician(name: str, taxonomy: str, org: str, tin: str) -> Clinician:
        return Clinician(luhn_npi(str(next(npi_counter))), name, taxonomy, org, tin)

    tins = {"pcp-group": "310000001", "hospital": "320000002", "hospital-clinic": "320000003",
            "therapy-clinic": "330000004"}
    organisations = {
        "pcp-group": clinician("Northside Primary Care Group", "261QP2300X", "pcp-group", tins["pcp-group"]),
        "hospital": clinician("St. Example General Hospital", "282N00000X", "hospital", tins["hospital"]),
        "hospital-clinic": clinician("St. Example Community Clinic", "261QP2300X", "hospital", tins["hospital-clinic"]),
        "therapy-clinic": clinician("Motion Therapy Clinic", "261QP2000X", "therapy-clinic", tins["therapy-clinic"]),
    }
    aco_pcps = [clinician("PCP %d (ACO)" % i, ("207Q00000X", "207R00000X", "363L00000X")[i % 3], "pcp-group",
                          tins["pcp-group"]) for i in range(12)]
    outside_pcps = [clinician("PCP %d (community clinic)" % i, "207Q00000X", "hospital", tins["hospital-clinic"])
                    for i in range(5)]
    specialists = [clinician("Cardiologist %d" % i, "207RC0000X", "hospital", tins["hospital"]) for i in range(3)]
    surgeons = [clinician("Orthopaedic surgeon %d" % i, "207X00000X", "hospital", tins["hospital"]) for i in range(3)]
    therapists = [clinician(n, t, "therapy-clinic", tins["therapy-clinic"]) for n, t in
                  (("Physical therapist A", "225100000X"), ("Physical therapist B", "225100000X"),
                   ("Occupational therapist", "225X00000X"), ("Chiropractor", "111N00000X"))]
    world = World([], aco_pcps, outside_pcps, specialists, surgeons, therapists, organisations, tins)
    for n in range(members):
        pseudonym = rng.getrandbits(128).to_bytes(16, "big")
        draw = rng.random()
        pcp = rng.choice(aco_pcps) if draw < 0.62 else rng.choice(outside_pcps) if draw < 0.85 else None
        age = rng.randint(65, 92)
        member = Member(pseudonym, pcp, age, rng.choice("FM"), rng.random() < 0.24, rng.random() < 0.52)
        if rng.random() < 0.04:
            visits = rng.randint(6, 28)
            dates = sorted({day_of_year(rng, 15, 330) for _ in range(visits)})  # one visit a day (duplicate key)
            member.therapy_visits = [(d, *rng.choice(THERAPY)) for d in dates]
            member.payer_b = rng.random() < 0.5
        world.members.append(member)
    # knee replacements: ~0.6 % of members, at least 3 (so a small demo still reconciles a bundle)
    with_pcp = [m for m in world.members if m.pcp is not None]
    for m in rng.sample(with_pcp, min(len(with_pcp), max(3, members * 6 // 1000))):
        m.knee = True
    for n, member in enumerate(world.members):
        member.claims = _member_claims(rng, world, member, n)
    return world


def _line(date: int, hcpcs: str | None, allowed: int, revenue: str | None = None, units: int = 1) -> dict[str, Any]:
    return {"service_date": date, "hcpcs": hcpcs, "revenue_code": revenue, "allowed_cents": allowed,
            "paid_cents": allowed * 8 // 10, "units": units}


def _claim(claim_id: str, kind: str, member: Member, rendering: Clinician, billing: Clinician,
           lines: list[dict[str, Any]], diagnoses: list[str], pos: str | None, drg: str | None = None) -> dict[str, Any]:
    lines = sorted(lines, key=lambda line: line["service_date"])
    return {"claim_id": claim_id, "kind": kind, "patient": member.pseudonym, "billing_tin": billing.tin,
            "billing_npi": billing.npi, "rendering_npi": rendering.npi,
            "from_date": lines[0]["service_date"], "through_date": lines[-1]["service_date"],
            "place_of_service": pos, "drg": drg, "diagnoses": diagnoses,
            "document": commitment(claim_id), "lines": lines}


def _member_claims(rng: random.Random, world: World, member: Member, n: int) -> list[dict[str, Any]]:
    """A year of adjudicated claims: grouped per provider and half-year to keep the tx count down."""
    claims: list[dict[str, Any]] = []
    dx = (["E119"] if member.diabetic else []) + (["I10"] if member.hypertensive else []) or ["Z0000"]
    if member.pcp is not None:
        billing = world.organisations["pcp-group" if member.pcp.org == "pcp-group" else "hospital-clinic"]
        visits = max(1, int(rng.expovariate(1 / (2.5 + member.diabetic + member.hypertensive))))
        halves: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for _ in range(visits):
            date = day_of_year(rng)
            code = rng.choice(("99213", "99214", "99214", "99215", "G0439"))
            halves[date // 100 % 100 > 6].append(_line(date, code, rng.randint(9_000, 21_000)))
            if member.diabetic and rng.random() < 0.5:
                halves[date // 100 % 100 > 6].append(_line(date, "83036", rng.randint(1_000, 1_800)))
        for half, lines in sorted(halves.items()):
            claims.append(_claim("c%06d-pc%d" % (n, half), "professional", member, member.pcp, billing, lines, dx, "11"))
    if rng.random() < 0.30 + 0.2 * member.hypertensive:  # specialist care
        doctor = rng.choice(world.specialists)
        lines = [_line(day_of_year(rng), rng.choice(("99243", "93306", "93000")), rng.randint(8_000, 60_000))
                 for _ in range(rng.randint(1, 4))]
        claims.append(_claim("c%06d-sp" % n, "professional", member, doctor, world.organisations["hospital"],
                             lines, dx, "22"))
    if rng.random() < 0.60:  # outpatient facility (imaging, labs, ED)
        lines = [_line(day_of_year(rng), None, int(rng.lognormvariate(11.9, 1.0)), revenue=rng.choice(("0450", "0320", "0300")))
                 for _ in range(rng.randint(1, 3))]
        claims.append(_claim("c%06d-op" % n, "outpatient", member, rng.choice(world.specialists),
                             world.organisations["hospital"], lines, dx, "22"))
    if rng.random() < 0.17 + 0.06 * member.diabetic:  # an inpatient stay (not a knee replacement)
        admit = day_of_year(rng, 1, 350)
        days = rng.randint(2, 7)
        claims.append(_claim("c%06d-ip" % n, "inpatient", member, rng.choice(world.specialists),
                             world.organisations["hospital"],
                             [_line(add_days(admit, days), None, rng.randint(1_200_000, 5_500_000), revenue="0120", units=days)],
                             dx, "21", drg=rng.choice(("291", "292", "194", "871"))))
        if rng.random() < 0.5:  # post-acute home health / outpatient rehab after the stay
            lines = [_line(add_days(admit, days + 7 * k + 2), None, rng.randint(40_000, 160_000), revenue="0420")
                     for k in range(rng.randint(3, 8))]
            claims.append(_claim("c%06d-pa" % n, "outpatient", member, rng.choice(world.specialists),
                                 world.organisations["hospital"], [l for l in lines if l["service_date"] <= PERIOD_END]
                                 or [_line(PERIOD_END, None, 50_000, revenue="0420")], dx, "12"))
    if member.knee:
        admit = day_of_year(rng, 10, 250)
        surgeon = rng.choice(world.surgeons)
        member.knee_dates = (admit, add_days(admit, 1), add_days(admit, rng.randint(2, 4)))
        discharge = member.knee_dates[2]
        claims.append(_claim("c%06d-knee" % n, "inpatient", member, surgeon, world.organisations["hospital"],
                             [_line(discharge, None, rng.randint(1_500_000, 2_100_000), revenue="0360")],
                             ["M1711"], "21", drg=rng.choice(("469", "470", "470", "470"))))
        rehab = [_line(add_days(discharge, 3 + 4 * k), "97110", rng.randint(9_000, 13_000)) for k in range(rng.randint(4, 12))]
        claims.append(_claim("c%06d-rehab" % n, "professional", member, world.therapists[0],
                             world.organisations["therapy-clinic"], rehab, ["Z471"], "11"))
        if rng.random() < 0.15:  # a readmission inside the 90-day window
            back = add_days(discharge, rng.randint(10, 60))
            claims.append(_claim("c%06d-readm" % n, "inpatient", member, surgeon, world.organisations["hospital"],
                                 [_line(back, None, rng.randint(800_000, 1_600_000), revenue="0120")],
                                 ["T8450XA"], "21", drg="864"))
    return claims


# ----------------------------------------------------------------- the year


@dataclass
class YearResult:
    report: dict[str, Any]
    chart: str | None
    failed: list[Outcome]
    outcomes: int


def load_accounts(directory: str) -> dict[str, PrivateKey]:
    keys = {}
    for org in DEMO_ORGS:
        matches = [f for f in sorted(os.listdir(directory)) if f.startswith(org + "-") and f.endswith(".json")
                   and json.load(open(os.path.join(directory, f))).get("org") == org]
        if not matches:
            raise DemoError("no account for %s in %s (run `careledger testnet --demo`)" % (org, directory))
        keys[org] = load_key_file(os.path.join(directory, matches[0]))
    return keys


def run_year(urls: list[str], accounts_dir: str, members: int = DEFAULT_MEMBERS, seed: int = 2025,
             out_dir: str = ".", log: Callable[[str], None] = print) -> YearResult:
    """Run the whole demonstration year against the cluster at `urls`. Raises DemoError."""
    t0 = time.monotonic()
    world = build_world(members, seed)
    log("synthetic population: %d members, %d claims, %d knee replacements, %d therapy patients (seed %d)" % (
        len(world.members), sum(len(m.claims) for m in world.members), sum(m.knee for m in world.members),
        sum(bool(m.therapy_visits) for m in world.members), seed))
    ledger = Ledger(urls, log=log)
    try:
        return _run(ledger, world, accounts_dir, out_dir, log, t0)
    finally:
        ledger.close()


def _run(ledger: Ledger, world: World, accounts_dir: str, out_dir: str, log: Callable[[str], None],
         t0: float) -> YearResult:
    log("submitting through %s (%s)" % (", ".join(ledger.validators),
                                        "POST /txs batches" if ledger.batch_route else "POST /tx"))
    keys = load_accounts(accounts_dir)
    admin = {org: ledger.signer(org + "/admin", org, k) for org, k in keys.items()}
    now_ms = int(time.time() * 1000)
    year_ms = 365 * 86_400_000

    # -- 1. set-up: staff keys first (the payers' claim volume needs several nonce streams)
    staff_keys = {"payer-a": [generate_private_key() for _ in range(PAYER_A_STAFF)],
                  "payer-b": [generate_private_key() for _ in range(PAYER_B_STAFF)]}
    steps = [Step(admin[org], "gov_create_account", {"public_key": k.public_key, "admin": False}, "%s staff key" % org)
             for org, ks in staff_keys.items() for k in ks]
    for org, provider in world.organisations.items():
        owner = provider.org
        steps.append(Step(admin[owner], "tin_register", {"tin": provider.tin, "name": provider.name}, provider.tin))
    require_ok(ledger.run(steps, "staff keys, TINs"), "set-up")
    staff = {org: [Signer("%s/staff%d" % (org, i), org, k, 1) for i, k in enumerate(ks)]
             for org, ks in staff_keys.items()}

    clinicians = world.aco_pcps + world.outside_pcps + world.specialists + world.surgeons + world.therapists
    steps = [Step(admin[p.org], "provider_register", {"npi": p.npi, "entity": "organisation", "name": p.name,
                                                      "taxonomies": [p.taxonomy], "primary_taxonomy": p.taxonomy,
                                                      "tin": p.tin}, p.name)
             for p in world.organisations.values()]
    steps += [Step(admin[c.org], "provider_register", {"npi": c.npi, "entity": "individual", "name": c.name,
                                                       "taxonomies": [c.taxonomy], "primary_taxonomy": c.taxonomy}, c.name)
              for c in clinicians]
    steps.append(Step(admin["payer-a"], "program_create", {"program_id": MSSP_PROGRAM, "name": "Shared savings PY2025",
                                                           "required_credential": "licence"}))
    require_ok(ledger.run(steps, "providers, MSSP program"), "provider registration")

    steps = [Step(admin["pcp-group"], "aco_register", {"program_id": MSSP_PROGRAM, "aco_id": ACO_ID,
                                                        "name": "Northside ACO"})]
    steps += [Step(admin["auditor"], "credential_issue", {
        "credential_id": "lic-%s" % c.npi, "npi": c.npi, "kind": "licence", "valid_from_ms": now_ms - 2 * year_ms,
        "expires_at_ms": now_ms + 2 * year_ms, "document_commitment": commitment("licence", c.npi),
        "jurisdiction": "MA"}, c.name) for c in clinicians]
    for org, mid, domain, inverse in (("auditor", "dm-a1c-poor-control", "chronic", True),
                                      ("auditor", "bp-control", "chronic", False),
                                      ("auditor", "breast-cancer-screening", "prevention", False),
                                      ("auditor", "readmission-30d", "care-coordination", True)):
        steps.append(Step(admin[org], "measure_define", {
            "measure_id": mid, "scoring": "proportion", "domain": domain, "weight": 1, "inverse": inverse,
            "criteria": commitment("measure", mid),
            "populations": ["initial_population", "denominator", "denominator_exclusion", "numerator"]}, mid))
    steps.append(Step(admin["auditor"], "episode_define", {"episode_id": EPISODE_DEF, "trigger_drgs": ["469", "470"],
                                                           "window_days": 90, "anchor": "discharge"}))
    steps.append(Step(admin["payer-a"], "program_register", {
        "program_id": MSSP_PROGRAM, "type": "mssp", "performance_year": YEAR,
        "params": {"track": "E", "msr_option_bps": 200, "revenue_based_loss_limit": False},
        "participants": [["pcp-group", 10_000]]}))
    steps.append(Step(admin["payer-a"], "benchmark_set", {
        "program_id": MSSP_PROGRAM, "by_per_capita_cents": BENCHMARK_BY_CENTS,
        "regional_adjustment_cents": BENCHMARK_REGIONAL_CENTS, "update_factor": BENCHMARK_UPDATE_FACTOR},
        "MSSP benchmark"))
    steps.append(Step(admin["payer-a"], "program_register", {
        "program_id": BPCI_PROGRAM, "type": "bpci_advanced", "performance_year": YEAR,
        "params": {"milestone_bps": {"admission": 1_000, "procedure": 3_000, "discharge": 3_000, "followup_30d": 1_000},
                   "episodes": {BPCI_CATEGORY: {"trigger_kind": "ms_drg", "codes": ["469", "470"],
                                                "benchmark_cents": KNEE_BENCHMARK_CENTS}}},
        "participants": [["hospital", 8_000], ["therapy-clinic", 2_000]]}))
    categories = {"office": {"copay_cents": 2_500, "deductible_applies": False},
                  "pt": {"copay_cents": 3_000, "deductible_applies": False},
                  "ot": {"copay_cents": 3_000, "deductible_applies": False},
                  "chiro": {"copay_cents": 2_000, "deductible_applies": False}}
    bucket = [{"bucket_id": "therapy_visits", "categories": ["chiro", "ot", "pt"], "unit": "visits",
               "limit": THERAPY_VISIT_LIMIT, "hard": True, "pool": THERAPY_POOL}]
    for org, plan in (("payer-a", PLAN_A), ("payer-b", PLAN_B)):
        steps.append(Step(admin[org], "benefit_plan_register", {
            "plan_id": plan, "kind": "commercial", "cob_provision": True, "cob_method": "standard",
            "deductible_cents": {"individual": 50_000, "family": 100_000},
            "oop_max_cents": {"individual": 400_000, "family": 800_000},
            "categories": categories, "buckets": bucket}, plan))
    require_ok(ledger.run(steps, "licences, benchmark, measures, programs, plans"), "programs")

    steps = [Step(admin["pcp-group"], "aco_add_participant", {"program_id": MSSP_PROGRAM, "aco_id": ACO_ID,
                                                                  "tin": world.tins["pcp-group"],
                                                                  "npis": [c.npi for c in world.aco_pcps]})]
    steps += [Step(admin["pcp-group"], "program_sign", {"program_id": MSSP_PROGRAM}),
              Step(admin["hospital"], "program_sign", {"program_id": BPCI_PROGRAM}),
              Step(admin["therapy-clinic"], "program_sign", {"program_id": BPCI_PROGRAM}),
              Step(admin["auditor"], "composite_define", {
                  "composite_id": COMPOSITE, "measures": ["bp-control", "breast-cancer-screening",
                                                          "dm-a1c-poor-control", "readmission-30d"],
                  "domain_weights": {"chronic": 2, "prevention": 1, "care-coordination": 1}})]
    require_ok(ledger.run(steps, "participants, signatures"), "signatures")

    # -- 2. members and their year of claims (a member's txs all go through one staff key, in order)
    def payer_a_key(member: Member) -> Signer:
        return staff["payer-a"][member.pseudonym[0] % len(staff["payer-a"])]

    steps = []
    for m in world.members:
        signer = payer_a_key(m)
        steps.append(Step(signer, "patient_register", {"patient": m.pid}, m.pid[:11]))
        steps.append(Step(signer, "coverage_enroll", {"patient": m.pid, "months": [YEAR * 100 + k for k in range(1, 13)],
                                                      "part_a": True, "part_b": True, "advantage": False}, m.pid[:11]))
        if m.therapy_visits:
            steps.append(Step(signer, "benefit_coverage_enroll", {
                "member": m.pid, "plan_id": PLAN_A, "family_id": "fam-" + m.pid[3:15], "relationship": "self",
                "coverage_start": PERIOD_START, "coverage_end": PERIOD_END, "subscriber_birthday": 301,
                "employment": "active"}, m.pid[:11]))
        for claim in m.claims:
            steps.append(Step(signer, "claim_submit", claim, claim["claim_id"]))
    claims_out = ledger.run(steps, "members, coverage, claims (payer A)")
    committed_claims = {o.step.body["claim_id"] for o in claims_out if o.ok and o.step.type == "claim_submit"}

    # payer B covers some therapy patients as the spouse's plan (secondary under NAIC MDL-120 §6 rule 2)
    steps = [Step(staff["payer-b"][i % PAYER_B_STAFF], "benefit_coverage_enroll", {
        "member": m.pid, "plan_id": PLAN_B, "family_id": "famb-" + m.pid[3:15], "relationship": "spouse",
        "coverage_start": PERIOD_START, "coverage_end": PERIOD_END, "subscriber_birthday": 915,
        "employment": "active"}, m.pid[:11])
        for i, m in enumerate(m for m in world.members if m.payer_b)]
    ledger.run(steps, "payer B coverage (spouse plans)")

    # -- 3. knee-replacement bundles: the hospital opens each episode and records milestones
    knees = [m for m in world.members if m.knee and any(c["claim_id"].endswith("-knee") for c in m.claims)]
    steps = []
    for m in knees:
        admit, surgery, discharge = m.knee_dates
        claim = next(c for c in m.claims if c["claim_id"].endswith("-knee"))
        eid = "knee-" + m.pid[3:15]
        steps.append(Step(admin["hospital"], "episode_open", {"program_id": BPCI_PROGRAM, "episode_id": eid,
                                                              "patient": m.pid, "category": BPCI_CATEGORY,
                                                              "trigger_code": claim["drg"], "anchor_date": admit}, eid))
        for milestone, date in (("admission", admit), ("procedure", surgery), ("discharge", discharge),
                                ("followup_30d", add_days(discharge, 28))):
            steps.append(Step(admin["hospital"], "episode_milestone", {"program_id": BPCI_PROGRAM, "episode_id": eid,
                                                                       "milestone": milestone, "date": date}, eid))
    bundle_out = ledger.run(steps, "BPCI-A episodes and milestones (hospital)")

    # -- 4. therapy: payer A adjudicates every visit; payer B then adjudicates as secondary
    therapy_npi = {"pt": world.therapists[0].npi, "ot": world.therapists[2].npi, "chiro": world.therapists[3].npi}
    billing_npi = world.organisations["therapy-clinic"].npi

    def visit_body(m: Member, n: int, visit: tuple[int, str, str], plan: str, claim_prefix: str) -> dict[str, Any]:
        date, category, hcpcs = visit
        allowed = {"pt": 11_500, "ot": 12_000, "chiro": 6_500}[category]
        return {"claim_id": "%s-%s-%02d" % (claim_prefix, m.pid[3:15], n), "line": 0, "member": m.pid,
                "plan_id": plan, "service_date": date, "category": category, "hcpcs": hcpcs,
                "units": 1, "billed_cents": allowed * 3 // 2, "allowed_cents": allowed,
                "rendering_npi": therapy_npi[category], "billing_npi": billing_npi, "place_of_service": "11"}

    therapy_members = [m for m in world.members if m.therapy_visits]
    steps = [Step(payer_a_key(m), "benefit_adjudicate", visit_body(m, n, v, PLAN_A, "tha"), "visit")
             for m in therapy_members for n, v in enumerate(m.therapy_visits)]
    primary_out = ledger.run(steps, "therapy visits, primary (payer A)")
    steps = [Step(staff["payer-b"][i % PAYER_B_STAFF], "benefit_adjudicate", visit_body(m, n, v, PLAN_B, "thb"), "visit")
             for i, m in enumerate(m for m in therapy_members if m.payer_b) for n, v in enumerate(m.therapy_visits)]
    secondary_out = ledger.run(steps, "therapy visits, secondary (payer B, COB)")

    # -- 5. year end
    # attribution in batches (MAX_PATIENTS_PER_RUN)
    pids = [m.pid for m in world.members]
    steps = [Step(admin["payer-a"], "attribution_run", {"program_id": MSSP_PROGRAM, "run_id": "py2025-b%d" % (i // ATTRIBUTION_BATCH + 1),
                                                        "period_start": PERIOD_START, "period_end": PERIOD_END,
                                                        "patients": pids[i:i + ATTRIBUTION_BATCH]})
             for i in range(0, len(pids), ATTRIBUTION_BATCH)]
    # quality results (the providers report their own), episode spending (auditor)
    quality = _quality_counts(world)
    for org, counts_by_measure in quality.items():
        for measure, counts in counts_by_measure.items():
            steps.append(Step(admin[org], "quality_result_submit", {
                "measure_id": measure, "program": MSSP_PROGRAM, "period": str(YEAR), "provider": org,
                "counts": counts, "document": commitment("measurereport", org, measure)}, measure))
    steps += [Step(admin["auditor"], "episode_compute", {"episode_id": EPISODE_DEF, "patient": m.pseudonym}, m.pid[:11])
              for m in knees]
    require_ok(ledger.run(steps, "attribution runs, quality results, episodes"), "year-end inputs")
    steps = [Step(admin["auditor"], "composite_compute", {"composite_id": COMPOSITE, "program": MSSP_PROGRAM,
                                                          "period": str(YEAR), "provider": org}, org)
             for org in ("pcp-group", "hospital")]
    for measure in quality["pcp-group"]:
        steps.append(Step(admin["auditor"], "quality_benchmark_compute", {"measure_id": measure, "program": MSSP_PROGRAM,
                                                                          "period": str(YEAR)}, measure))
    require_ok(ledger.run(steps, "quality composites and benchmarks"), "quality")

    # total cost of care of the assigned population, walked on-ledger in pages; the quality standard
    window = {"program": MSSP_PROGRAM, "aco_id": ACO_ID, "period_start": PERIOD_START, "period_end": PERIOD_END}
    steps = [Step(admin["auditor"], "tcoc_open", dict(window, truncation_cents=TCOC_TRUNCATION_CENTS), "open")]
    steps += [Step(admin["auditor"], "tcoc_accumulate", dict(window, cursor=cursor, limit=TCOC_PAGE), "page")
              for cursor in range(0, len(pids), TCOC_PAGE)]
    steps.append(Step(admin["auditor"], "tcoc_close", window, "close"))
    steps.append(Step(admin["auditor"], "quality_standard_assess", {"program_id": MSSP_PROGRAM, "composite_id": COMPOSITE,
                                                                    "provider": "pcp-group"}, "QPS"))
    # the ACO participants' revenue (Level E's revenue-based loss limit, §425.20 high/low
    # revenue), from the payer's claims under the participant TINs, also in pages
    steps.append(Step(admin["auditor"], "revenue_open", window, "revenue open"))
    require_ok(ledger.run(steps, "total cost of care (pages), quality standard"), "tcoc")
    ledger.sync(admin["auditor"], admin["payer-a"].public_key)
    revenue_key = state_key("participant_revenue", MSSP_PROGRAM, ACO_ID, PERIOD_START, PERIOD_END)
    claims_total = ledger.state_value(revenue_key)["claims_total"]
    steps = [Step(admin["auditor"], "revenue_accumulate", dict(window, cursor=cursor, limit=REVENUE_PAGE), "page")
             for cursor in range(0, claims_total, REVENUE_PAGE)]
    steps.append(Step(admin["auditor"], "revenue_close", window, "revenue close"))
    require_ok(ledger.run(steps, "participant revenue (pages)"), "revenue")

    ledger.sync(admin["auditor"], admin["payer-a"].public_key)
    assignments = ledger.states([state_key("assignment", MSSP_PROGRAM, pid) for pid in pids])
    assigned = [m for m, a in zip(world.members, assignments) if a is not None and a.get("aco") == ACO_ID]
    bases = Counter((a or {}).get("basis") or (a or {}).get("reason") or "none" for a in assignments)
    tcoc_key = state_key("tcoc", MSSP_PROGRAM, ACO_ID, PERIOD_START, PERIOD_END)
    tcoc = ledger.state_value(tcoc_key)
    benchmark_key = state_key("mssp_benchmark", MSSP_PROGRAM, YEAR)
    benchmark = ledger.state_value(benchmark_key)
    per_capita = Fraction(*benchmark["updated_per_capita"])
    standard_key = state_key("quality", "standard", MSSP_PROGRAM, YEAR)
    standard = ledger.state_value(standard_key)
    score = Fraction(*standard["score"])
    revenue = ledger.state_value(revenue_key)
    settle_body = {
        "program_id": MSSP_PROGRAM, "stage": "final", "tcoc_ref": ledger.reference(tcoc_key),
        "benchmark_ref": ledger.reference(benchmark_key), "quality_ref": ledger.reference(standard_key),
        "revenue_ref": ledger.reference(revenue_key),
    }
    hospital_key = state_key("quality", "composite", COMPOSITE, MSSP_PROGRAM, str(YEAR), "hospital")
    hospital_score = Fraction(*ledger.state_value(hospital_key)["score"])
    episodes = []
    for m in knees:
        k = state_key("costs", "episode", EPISODE_DEF, m.pseudonym)
        record = ledger.state_value(k)
        if record and record["episodes"]:
            episodes.append({"episode_id": "knee-" + m.pid[3:15], "actual_cents": record["episodes"][0]["allowed_cents"],
                             "spending_ref": ledger.reference(k)})
    steps = [Step(admin["payer-a"], "settlement_submit", settle_body, "MSSP final")]
    if episodes:
        steps.append(Step(admin["payer-a"], "bundle_reconcile", {
            "program_id": BPCI_PROGRAM, "period": str(YEAR), "cqs_hundredths": int(hospital_score * 10_000),
            "cqs_ref": ledger.reference(hospital_key), "episodes": episodes}, "BPCI-A reconciliation"))
    settle_out = ledger.run(steps, "MSSP settlement, BPCI-A reconciliation")
    settlement_id = "%s/mssp/%d/final" % (MSSP_PROGRAM, YEAR)
    if settle_out[0].ok:
        ledger.run([Step(admin["payer-a"], "settlement_disburse", {"settlement_id": settlement_id})], "disbursement")

    # -- the report, from the ledger's records
    ledger.sync(admin["auditor"], admin["payer-a"].public_key)
    settlement = ledger.state_value(state_key("settlement", settlement_id))
    disbursement = ledger.state_value(state_key("disbursement", settlement_id))
    bundle = ledger.state_value(state_key("settlement", "%s/bpci_advanced/%d/final" % (BPCI_PROGRAM, YEAR)))
    milestone_cents = sum(e["cents"] for o in bundle_out if o.ok for e in
                          [ev for ev in o.events if isinstance(ev, dict) and ev.get("type", ev.get("name")) == "episode_milestone"]
                          if isinstance(e, dict) and "cents" in e)
    if not milestone_cents:
        milestone_cents = _milestone_total(ledger, knees)
    report = {
        "members": len(world.members), "claims_committed": len(committed_claims),
        "assigned": tcoc["assigned_count"], "assignment_bases": dict(bases),
        "tcoc": tcoc, "revenue": revenue, "per_capita_benchmark_cents": per_capita,
        "benchmark_cents": ((settlement or {}).get("inputs") or {}).get("benchmark_cents",
                                                                          round(per_capita * tcoc["assigned_count"])),
        "quality_standard": standard,
        "quality_score": score, "hospital_cqs": hospital_score,
        "settlement": settlement, "disbursement": disbursement, "bundle": bundle, "knee_episodes": len(knees),
        "milestone_cents": milestone_cents,
        "therapy": _therapy_summary(primary_out, secondary_out),
        "settlement_ok": bool(settle_out and settle_out[0].ok),
        "settlement_receipt": settle_out[0] if settle_out else None,
        "bundle_ok": bool(len(settle_out) > 1 and settle_out[1].ok),
        "elapsed_s": time.monotonic() - t0, "txs": len(ledger.outcomes),
    }
    chart = _chart(world, assigned, committed_claims, report["benchmark_cents"], tcoc, out_dir)
    failed = [o for o in ledger.outcomes if not o.ok]
    return YearResult(report, chart, failed, len(ledger.outcomes))


def _milestone_total(ledger: Ledger, knees: list[Member]) -> int:
    total = 0
    for m in knees:
        episode = ledger.state_value(state_key("bundle_episode", BPCI_PROGRAM, "knee-" + m.pid[3:15]))
        if episode:
            total += sum(v["cents"] for v in episode["milestones"].values())
    return total


def _quality_counts(world: World) -> dict[str, dict[str, dict[str, int]]]:
    """Measure populations per provider organisation, from the synthetic members (seeded)."""
    rng = random.Random(len(world.members))
    out: dict[str, dict[str, dict[str, int]]] = {}
    for org, members in (("pcp-group", [m for m in world.members if m.pcp and m.pcp.org == "pcp-group"]),
                         ("hospital", [m for m in world.members if m.pcp and m.pcp.org == "hospital"])):
        good = 0.78 if org == "pcp-group" else 0.68

        def counts(pop: list[Member], rate: float) -> dict[str, int]:
            den = len(pop)
            excl = sum(rng.random() < 0.03 for _ in range(den))
            numer = sum(rng.random() < rate for _ in range(den - excl))
            return {"initial_population": den, "denominator": den, "denominator_exclusion": excl, "numerator": numer}

        out[org] = {
            "dm-a1c-poor-control": counts([m for m in members if m.diabetic], 1 - good - 0.05),
            "bp-control": counts([m for m in members if m.hypertensive], good - 0.1),
            "breast-cancer-screening": counts([m for m in members if m.sex == "F" and m.age < 75], good),
            "readmission-30d": counts([m for m in members if any(c["kind"] == "inpatient" for c in m.claims)], 0.14),
        }
    return out


def _therapy_summary(primary: list[Outcome], secondary: list[Outcome]) -> dict[str, Any]:
    def events(outcomes: list[Outcome]) -> list[dict[str, Any]]:
        found = []
        for o in outcomes:
            for event in o.events:
                if isinstance(event, dict) and "paid_cents" in event.get("attributes", event):
                    found.append(event.get("attributes", event))
                elif isinstance(event, list) and len(event) == 2 and isinstance(event[1], dict):
                    found.append(event[1])
        return found

    a, b = events(primary), events(secondary)
    return {
        "visits": len(primary), "primary_paid": sum(e.get("status") == "paid" for e in a),
        "primary_denied_limit": sum(e.get("reason") == "benefit_limit_reached" for e in a),
        "primary_paid_cents": sum(e.get("paid_cents", 0) for e in a),
        "secondary_lines": len(secondary), "secondary_paid_cents": sum(e.get("paid_cents", 0) for e in b),
        "secondary_denied_limit": sum(e.get("reason") == "benefit_limit_reached" for e in b),
        "member_cents_after_cob": sum(e.get("member_cents", 0) for e in b),
        "failed": sum(not o.ok for o in primary + secondary),
    }


def _chart(world: World, assigned: list[Member], committed: set[str], benchmark_cents: int,
           tcoc: dict[str, Any], out_dir: str) -> str | None:
    """Cumulative allowed spending of the assigned population by month against the benchmark."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monthly = [0] * 12
    for m in assigned:
        for claim in m.claims:
            if claim["claim_id"] in committed:
                for line in claim["lines"]:
                    monthly[line["service_date"] // 100 % 100 - 1] += line["allowed_cents"]
    cumulative, total = [], 0
    for cents in monthly:
        total += cents
        cumulative.append(total / 100)
    months = list(range(1, 13))
    benchmark = [benchmark_cents / 100 * k / 12 for k in months]
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "cumulative_spending.png")
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    ax.plot(months, [v / 1e6 for v in benchmark], "--", color="#555", label="benchmark (pro rata)")
    ax.plot(months, [v / 1e6 for v in cumulative], "-o", color="#1f77b4", label="actual (allowed, untruncated)")
    ax.axhline(tcoc["expenditures_cents"] / 1e8, color="#2ca02c", lw=0.8,
               label="ledger TCOC, truncated ($%.2fM)" % (tcoc["expenditures_cents"] / 1e8))
    ax.set_xticks(months)
    ax.set_xticklabels(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"])
    ax.set_ylabel("US$ millions")
    ax.set_title("%s: cumulative spending of %d assigned members vs benchmark" % (MSSP_PROGRAM, len(assigned)))
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# ----------------------------------------------------------------- printing


def dollars(cents: int | float | Fraction | None) -> str:
    if cents is None:
        return "-"
    value = float(Fraction(cents)) / 100 if isinstance(cents, (int, Fraction)) else cents / 100
    return ("-$%s" if value < 0 else "$%s") % format(abs(value), ",.2f")


def print_report(result: YearResult, console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=110)
    r = result.report
    s = r["settlement"] or {}
    res = s.get("result", {})

    def frac(v: Any) -> str:
        if isinstance(v, list) and len(v) == 2:
            return "%.4f" % (v[0] / v[1])
        return str(v)

    table = Table(title="MSSP settlement %s (BASIC Level E, MSR 2 %%), from ledger records" % MSSP_PROGRAM)
    table.add_column("item")
    table.add_column("value", justify="right")
    table.add_column("ledger source")
    table.add_row("assigned beneficiaries", "{:,}".format(r["assigned"]), "tcoc/%s/%s/… (assigned_count)" % (MSSP_PROGRAM, ACO_ID))
    table.add_row("benchmark B", dollars(r["benchmark_cents"]),
                  "mssp_benchmark/%s/%d × assigned (%s pc)" % (MSSP_PROGRAM, YEAR, dollars(r["per_capita_benchmark_cents"])))
    table.add_row("expenditures E (truncated)", dollars(r["tcoc"]["expenditures_cents"]), "tcoc/%s/%s/…" % (MSSP_PROGRAM, ACO_ID))
    inputs = s.get("inputs") or {}
    table.add_row("participant revenue", dollars(r["revenue"]["revenue_cents"]),
                  "participant_revenue/%s/%s/… (%s-revenue ACO)" % (
                      MSSP_PROGRAM, ACO_ID, {True: "high", False: "low"}.get(inputs.get("high_revenue"), "?")))
    table.add_row("quality score (composite)", "%.2f %%" % (float(r["quality_score"]) * 100),
                  "quality/standard/%s/%d (QPS met: %s)" % (MSSP_PROGRAM, YEAR, r["quality_standard"]["met_standard"]))
    for name in ("savings_rate", "minimum_savings_rate", "generated_cents", "final_sharing_rate", "earned_cents"):
        if name in res:
            value = res[name]
            table.add_row(name, dollars(Fraction(*value)) if name.endswith("cents") and isinstance(value, list)
                          else dollars(value) if name.endswith("cents") else frac(value), "settlement result")
    table.add_row("amount due", dollars(s.get("amount_due_cents")), "settlement/%s" % s.get("id", "-"))
    if r["disbursement"]:
        for org, cents in r["disbursement"]["allocations"]:
            table.add_row("  disbursed to %s" % org, dollars(cents), "disbursement/…")
    console.print(table)

    b = r["bundle"]
    table = Table(title="BPCI Advanced knee replacements (%s)" % BPCI_PROGRAM)
    table.add_column("item")
    table.add_column("value", justify="right")
    table.add_row("episodes opened", str(r["knee_episodes"]))
    table.add_row("milestone payments released", dollars(r["milestone_cents"]))
    if b:
        br = b["result"]
        for name in ("episode_count", "total_target_cents", "total_spending_cents", "npra_cents",
                     "cqs_hundredths", "adjusted_npra_cents", "stop_applied", "reconciliation_cents"):
            value = br.get(name)
            if name.endswith("cents"):
                value = dollars(Fraction(*value) if isinstance(value, list) else value)
            table.add_row(name, str(value))
    else:
        table.add_row("reconciliation", "not recorded")
    console.print(table)

    t = r["therapy"]
    table = Table(title="PT/OT/chiropractic: one %d-visit pool shared by payer A and payer B (COB)" % THERAPY_VISIT_LIMIT)
    table.add_column("item")
    table.add_column("value", justify="right")
    for label, value in (("visits adjudicated by payer A (primary)", "{:,}".format(t["visits"])),
                         ("paid by payer A", "{:,}  ({})".format(t["primary_paid"], dollars(t["primary_paid_cents"]))),
                         ("denied: shared visit limit reached", "{:,}".format(t["primary_denied_limit"])),
                         ("lines adjudicated by payer B (secondary)", "{:,}".format(t["secondary_lines"])),
                         ("paid by payer B after payer A", dollars(t["secondary_paid_cents"])),
                         ("payer B denials: pool already used", "{:,}".format(t["secondary_denied_limit"])),
                         ("members' share after both payers", dollars(t["member_cents_after_cob"]))):
        table.add_row(label, value)
    console.print(table)

    table = Table(title="Transactions")
    table.add_column("committed", justify="right")
    table.add_column("failed receipts", justify="right")
    table.add_column("wall time", justify="right")
    table.add_row("{:,}".format(result.outcomes), str(len(result.failed)), "%.1f s" % r["elapsed_s"])
    console.print(table)
    if result.failed:
        table = Table(title="Failed receipts (by type and code)")
        for column in ("tx type", "code", "count", "first message"):
            table.add_column(column)
        groups: dict[tuple[str, str], list[Outcome]] = defaultdict(list)
        for o in result.failed:
            groups[(o.step.type, str(o.code))].append(o)
        for (tx_type, code), items in sorted(groups.items()):
            table.add_row(tx_type, code, str(len(items)), (items[0].message or "")[:90])
        console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", required=True, help="Comma-separated node RPC URLs.")
    parser.add_argument("--accounts", required=True, help="accounts/ of `careledger testnet --demo`.")
    parser.add_argument("--members", type=int, default=DEFAULT_MEMBERS)
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--out", default=".", help="Directory for cumulative_spending.png.")
    args = parser.parse_args(argv)
    try:
        result = run_year(args.nodes.split(","), args.accounts, args.members, args.seed, args.out)
    except DemoError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    print_report(result)
    print("chart: %s" % result.chart)
    return 0 if result.report["settlement_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
