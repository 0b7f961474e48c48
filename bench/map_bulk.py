"""Mapping a large CSV file: LoB Flows beside a hand-written loop, same libraries.

Generates a CSV of customers (12 columns: names with accents, e-mail,
dd/mm/yyyy dates, Berlin local times, epoch milliseconds, German amounts,
euro prices, yes/no, German phone numbers, a plan, a country code), then
maps it to JSON Lines twice, each in a child process of its own:

- **baseline**: a plain loop over ``csv.reader`` doing the same conversions
  with the same libraries (babel, phonenumbers, email-validator, zoneinfo,
  orjson), rejecting a row on the first error, no framework;
- **lobflows**: ``lobflows.transform.bulk.map_file`` with a mapping file
  that uses the product's converters.

It prints records per second, peak resident memory (VmHWM) and the memory
growth between 10 % of the rows and the end of each, the ratio of the two
rates (PERFORMANCE.md asks at least 0.5) and whether both wrote the same
records and rejected the same rows.

    python bench/map_bulk.py [--rows 1000000] [--repeat 1] [--keep DIR]

Needs LoB Flows installed; Linux for /proc/self/status.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import decimal
import hashlib
import json
import random
import subprocess
import sys
import tempfile
import time
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Any

FIRST_NAMES = ["anna", "jörg", "léa", "zoë", "björn", "maría", "françois", "ömer"]
LAST_NAMES = ["müller", "schäfer", "núñez", "o'brien", "dvořák", "gößl", "côté"]
PLANS = ["basic", "pro", "team"]
COUNTRIES = ["DE", "AT", "CH", "FR", "NL", "BE", "LU", "IT", "ES", "PL"]
AREA_CODES = ["030", "040", "089", "0221", "0151", "0171"]
BAD_EMAIL_EVERY = 1000  # one row in this many has an address without @

MAPPING = f"""\
mapping: customers
source: rows of the customer export (CSV)
target: customer records (JSON Lines)
fields:
  first_name: {{from: first_name, convert: [trim, title], required: true}}
  last_name: {{from: last_name, convert: [trim, title], required: true}}
  email: {{from: email, convert: [email], required: true}}
  birth_date: {{from: birth_date, convert: [{{date: "%d/%m/%Y"}}]}}
  signed_up:
    from: signed_up
    convert: [{{datetime: {{format: "%Y-%m-%d %H:%M", timezone: Europe/Berlin}}}}]
  last_login: {{from: last_login, convert: [{{epoch: milliseconds}}]}}
  amount: {{from: amount_de, convert: [{{number: de_DE}}]}}
  price: {{from: price_eur, convert: [{{money: EUR}}]}}
  active: {{from: active, convert: [boolean]}}
  phone: {{from: phone, convert: [{{phone: DE}}]}}
  plan: {{from: plan, convert: [{{enum: [{", ".join(PLANS)}]}}]}}
  country: {{from: country, convert: [trim, upper, {{enum: [{", ".join(COUNTRIES)}]}}]}}
"""

HEADER = [
    "first_name",
    "last_name",
    "email",
    "birth_date",
    "signed_up",
    "last_login",
    "amount_de",
    "price_eur",
    "active",
    "phone",
    "plan",
    "country",
]


# -- the input -----------------------------------------------------------------


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """A CSV of `rows` customers, the same for the same seed."""
    pick = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(HEADER)
        for index in range(rows):
            writer.writerow(_customer(pick, index))


def _customer(pick: random.Random, index: int) -> list[str]:
    first, last = pick.choice(FIRST_NAMES), pick.choice(LAST_NAMES)
    at = "." if index % BAD_EMAIL_EVERY == BAD_EMAIL_EVERY - 1 else "@"
    local = f"{first}.{last}".replace("'", "")
    signed_up = dt.datetime(2026, 1, 1, 8) + dt.timedelta(
        days=pick.randrange(180), hours=pick.randrange(12), minutes=pick.randrange(60)
    )
    cents = pick.randrange(1, 10_000_000)
    amount = f"{cents // 100:,}".replace(",", ".") + f",{cents % 100:02d}"
    return [
        f" {first} ",
        last,
        f"{local}{index}{at}Example.COM",
        f"{pick.randrange(1, 29):02d}/{pick.randrange(1, 13):02d}/{pick.randrange(1940, 2006)}",
        f"{signed_up:%Y-%m-%d %H:%M}",
        str(1_767_225_600_000 + pick.randrange(15_000_000_000)),
        amount,
        f"{pick.randrange(100, 100_000) / 100}",
        pick.choice(("yes", "no")),
        _phone(pick),
        pick.choice(PLANS),
        pick.choice(COUNTRIES).lower(),
    ]


def _phone(pick: random.Random) -> str:
    area = pick.choice(AREA_CODES)
    # Mobile numbers (015x, 017x) have 8 digits after the prefix here.
    digits = 8 if area.startswith("01") else 7
    return f"{area} {pick.randrange(10 ** (digits - 1), 10**digits)}"


# -- the two pipelines, each run in a child process --------------------------------


def memory_kib(key: str) -> int:
    """VmRSS or VmHWM of this process, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class Sampler:
    """Resident memory when the loop starts, at 10 % of the rows and at the end."""

    def __init__(self, rows: int) -> None:
        self.tenth = max(rows // 10, 1)
        self.start = memory_kib("VmRSS")
        self.at_tenth = 0

    def progress(self, done: int) -> None:
        if not self.at_tenth and done >= self.tenth:
            self.at_tenth = memory_kib("VmRSS")

    def result(self, seconds: float, written: int, rejected: int) -> dict[str, Any]:
        return {
            "seconds": seconds,
            "written": written,
            "rejected": rejected,
            "rss_start_kib": self.start,
            "rss_tenth_kib": self.at_tenth,
            "rss_end_kib": memory_kib("VmRSS"),
            "peak_kib": memory_kib("VmHWM"),
        }


def run_baseline(source: Path, out: Path, rejects: Path, rows: int) -> dict[str, Any]:
    """The same conversions written by hand: no framework, the same libraries."""
    import babel.numbers
    import email_validator
    import orjson
    import phonenumbers

    berlin, utc = zoneinfo.ZoneInfo("Europe/Berlin"), zoneinfo.ZoneInfo("UTC")
    epoch = dt.datetime(1970, 1, 1, tzinfo=utc)
    cent = decimal.Decimal(1).scaleb(-babel.numbers.get_currency_precision("EUR"))
    booleans = {"yes": True, "no": False, "true": True, "false": False}
    plans, countries = set(PLANS), set(COUNTRIES)
    e164 = phonenumbers.PhoneNumberFormat.E164

    def number(text: str) -> int | float:
        amount = babel.numbers.parse_decimal(text.strip(), locale="de_DE", strict=True)
        return int(amount) if amount == amount.to_integral_value() else float(amount)

    def phone(text: str) -> str:
        parsed = phonenumbers.parse(text, "DE")
        if not phonenumbers.is_valid_number(parsed):
            raise ValueError("not a valid phone number")
        return phonenumbers.format_number(parsed, e164)

    def choice(text: str, allowed: set[str]) -> str:
        if text not in allowed:
            raise ValueError(f"{text!r} is not one of {sorted(allowed)}")
        return text

    def convert(r: dict[str, str]) -> dict[str, Any]:
        signed_up = dt.datetime.strptime(r["signed_up"].strip(), "%Y-%m-%d %H:%M")
        price = decimal.Decimal(r["price_eur"].strip())
        return {
            "first_name": r["first_name"].strip().title(),
            "last_name": r["last_name"].strip().title(),
            "email": email_validator.validate_email(
                r["email"].strip(), check_deliverability=False
            ).normalized,
            "birth_date": dt.datetime.strptime(r["birth_date"].strip(), "%d/%m/%Y")
            .date()
            .isoformat(),
            "signed_up": signed_up.replace(tzinfo=berlin).astimezone(utc).isoformat(),
            "last_login": (
                epoch + dt.timedelta(milliseconds=int(r["last_login"]))
            ).isoformat(),
            "amount": number(r["amount_de"]),
            "price": format(price.quantize(cent, decimal.ROUND_HALF_UP), "f"),
            "active": booleans[r["active"].strip().casefold()],
            "phone": phone(r["phone"]),
            "plan": choice(r["plan"].strip(), plans),
            "country": choice(r["country"].strip().upper(), countries),
        }

    sampler = Sampler(rows)
    started = time.perf_counter()
    written = rejected = 0
    with (
        source.open(encoding="utf-8", newline="") as file,
        out.open("wb") as output,
        rejects.open("wb") as refused,
    ):
        reader = csv.reader(file)
        header = next(reader)
        for row, cells in enumerate(reader, start=2):
            if not row % 1024:
                sampler.progress(row - 1)
            try:
                record = convert(dict(zip(header, cells, strict=False)))
            except (ValueError, KeyError, decimal.InvalidOperation) as exc:
                refused.write(orjson.dumps({"row": row, "reason": str(exc)}) + b"\n")
                rejected += 1
                continue
            output.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
            written += 1
    return sampler.result(time.perf_counter() - started, written, rejected)


def run_lobflows(source: Path, out: Path, rejects: Path, rows: int) -> dict[str, Any]:
    """The mapping file through LoB Flows' reader, Mapper and writer."""
    from lobflows.spec import loader
    from lobflows.transform import bulk, mapper

    registry = loader.load_mappings(source.parent)
    customers = mapper.Mapper(registry["customers"], registry)
    sampler = Sampler(rows)
    summary = bulk.map_file(customers, source, out, rejects, progress=sampler.progress)
    return sampler.result(summary.seconds, summary.written, summary.rejected)


PIPELINES: dict[str, Callable[[Path, Path, Path, int], dict[str, Any]]] = {
    "baseline": run_baseline,
    "lobflows": run_lobflows,
}


# -- the parent: generate, run the children, report ---------------------------------


def measure(which: str, folder: Path, rows: int) -> dict[str, Any]:
    """One pipeline in a fresh interpreter; what it reports, plus its output's digest."""
    out = folder / f"{which}.jsonl"
    command = [sys.executable, __file__, "--child", which, "--dir", str(folder)]
    done = subprocess.run(
        [*command, "--rows", str(rows)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"{which} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    result["digest"] = hashlib.sha256(out.read_bytes()).hexdigest()
    result["rejected_rows"] = [
        json.loads(line)["row"]
        for line in (folder / f"{which}.rejects.jsonl").read_text().splitlines()
    ]
    return result


def report(rows: int, results: dict[str, list[dict[str, Any]]]) -> None:
    """A table of both pipelines, the ratio and the target check."""
    best = {
        name: min(runs, key=lambda r: r["seconds"]) for name, runs in results.items()
    }
    print(
        f"{'':10} {'records/s':>10} {'seconds':>8} {'written':>9} {'rejected':>8} "
        f"{'peak MiB':>9} {'RSS 10%':>8} {'RSS end':>8}"
    )
    for name, r in best.items():
        print(
            f"{name:10} {rows / r['seconds']:>10,.0f} {r['seconds']:>8.1f} "
            f"{r['written']:>9,} {r['rejected']:>8,} {r['peak_kib'] / 1024:>9.1f} "
            f"{r['rss_tenth_kib'] / 1024:>8.1f} {r['rss_end_kib'] / 1024:>8.1f}"
        )
    ratio = best["baseline"]["seconds"] / best["lobflows"]["seconds"]
    growth = (
        best["lobflows"]["rss_end_kib"] - best["lobflows"]["rss_tenth_kib"]
    ) / 1024
    same = best["baseline"]["digest"] == best["lobflows"]["digest"]
    same_rejects = (
        best["baseline"]["rejected_rows"] == best["lobflows"]["rejected_rows"]
    )
    print()
    print(
        f"records/s, lobflows ÷ baseline: {ratio:.2f} (target ≥ 0.50: "
        f"{'met' if ratio >= 0.5 else 'missed'})"
    )
    print(f"lobflows memory growth from 10 % of the rows to the end: {growth:+.1f} MiB")
    print(
        f"same records written: {'yes' if same else 'NO'}; "
        f"same rows rejected: {'yes' if same_rejects else 'NO'}"
    )


def main() -> None:
    """Generate the input, run each pipeline `--repeat` times, report the best runs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs per pipeline")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--child", choices=sorted(PIPELINES), help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        folder = args.dir
        result = PIPELINES[args.child](
            folder / "customers.csv",
            folder / f"{args.child}.jsonl",
            folder / f"{args.child}.rejects.jsonl",
            args.rows,
        )
        print(json.dumps(result))
        return

    with tempfile.TemporaryDirectory(prefix="lobflows-map-") as scratch:
        folder = args.keep or Path(scratch)
        (folder / "mappings").mkdir(parents=True, exist_ok=True)
        (folder / "mappings" / "customers.yaml").write_text(MAPPING)
        started = time.perf_counter()
        generate(folder / "customers.csv", args.rows)
        size_mib = (folder / "customers.csv").stat().st_size / 2**20
        print(
            f"{args.rows:,} rows, {size_mib:,.0f} MiB of CSV, generated in "
            f"{time.perf_counter() - started:.1f} s"
        )
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in PIPELINES}
        for _ in range(args.repeat):
            for name in PIPELINES:
                results[name].append(measure(name, folder, args.rows))
        report(args.rows, results)


if __name__ == "__main__":
    main()
