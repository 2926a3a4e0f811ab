"""Coverage: which columns look personal, and what in the policy ever removes or rewrites them.

``retention coverage`` reads every table of the policy's databases (every
schema the login can see), picks the columns whose names say they hold
personal data (an e-mail, a phone number, a name, an address, a birth date,
an IP address, a card or account number, an identity number, a position,
a device), and says for each what the policy does with it:

* a delete rule on its table deletes its rows once their period has run;
* an anonymize rule that lists the column rewrites it;
* a delete that cascades to its table (``on_parent_delete = "delete"``)
  deletes its rows with their parent;
* an erasure request deletes, or anonymizes, the rows linked to the person.

A personal-looking column none of these reach is *uncovered*: kept for ever
unless someone deletes it by hand.  Names are all it reads: no row, no value.
It is a list to review, not a verdict; a column can hold personal data under
any name, and a name can mislead.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

#: kind -> what a column's name holds (whole words of the name, split at '_', digits and case changes);
#: the first kind that matches wins, so the more particular come first (ip_address is an IP address)
KINDS: dict[str, tuple[str, ...]] = {
    "e-mail": ("email", "mail", "emailaddress"),
    "phone": ("phone", "mobile", "telephone", "tel", "fax", "msisdn", "cellphone"),
    "name": ("firstname", "lastname", "fullname", "surname", "givenname", "familyname", "middlename",
             "holder", "cardholder", "recipient", "nickname", "displayname"),
    "birth date": ("birth", "birthday", "birthdate", "dob"),
    "IP address": ("ip", "ipaddress", "ipv4", "ipv6", "remoteaddr"),
    "card or account": ("card", "cardnumber", "pan", "iban", "bic", "accountnumber", "bankaccount"),
    "identity number": ("ssn", "passport", "nationalid", "taxid", "nin", "driverlicense", "licensenumber"),
    "position": ("latitude", "longitude", "lat", "lng", "lon", "geo", "geolocation", "location"),
    "device": ("useragent", "deviceid", "imei", "idfa", "fingerprint"),
    "address": ("address", "addr", "street", "city", "zip", "zipcode", "postcode", "postal", "line1", "line2",
                "shipping", "billing"),
}
#: two words that make one: first_name, ip_address, user_agent ...
PAIRS: dict[tuple[str, str], str] = {
    ("first", "name"): "firstname", ("last", "name"): "lastname", ("full", "name"): "fullname",
    ("given", "name"): "givenname", ("family", "name"): "familyname", ("middle", "name"): "middlename",
    ("display", "name"): "displayname", ("user", "agent"): "useragent", ("device", "id"): "deviceid",
    ("ip", "address"): "ipaddress", ("remote", "addr"): "remoteaddr", ("card", "number"): "cardnumber",
    ("account", "number"): "accountnumber", ("bank", "account"): "bankaccount", ("national", "id"): "nationalid",
    ("tax", "id"): "taxid", ("driver", "license"): "driverlicense", ("license", "number"): "licensenumber",
    ("e", "mail"): "email", ("email", "address"): "emailaddress", ("date", "birth"): "birthdate",
    ("cell", "phone"): "cellphone", ("card", "holder"): "cardholder",
}
#: the bare word "name" is personal on a table of people, and after one of these words (buyer_name)
PEOPLE = ("user", "users", "customer", "customers", "contact", "contacts", "member", "members", "person", "people",
          "persons", "employee", "employees", "patient", "patients", "student", "students", "account", "accounts",
          "buyer", "buyers", "client", "clients", "subscriber", "subscribers", "guest", "guests")

_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


def words(name: str) -> list[str]:
    """``"billingAddress_line1"`` -> ``["billing", "address", "line", "1"]``, joined pairs added."""
    parts = [w.lower() for w in _WORD.findall(name)]
    joined = [PAIRS[(a, b)] for a, b in zip(parts, parts[1:]) if (a, b) in PAIRS]
    joined += [f"{a}{b}" for a, b in zip(parts, parts[1:]) if b.isdigit()]     # line1, ipv4
    return parts + joined


def kind_of(table: str, column: str) -> str | None:
    """What the column's name says it holds, or None when it says nothing personal."""
    ws = set(words(column))
    for kind, names in KINDS.items():
        if ws & set(names):
            return kind
    parts = [w.lower() for w in _WORD.findall(column)]
    if parts in (["name"], ["names"]) and table.rsplit(".", 1)[-1].lower() in PEOPLE:
        return "name"
    if any(a in PEOPLE and b == "name" for a, b in zip(parts, parts[1:])):    # buyer_name, customerName
        return "name"
    return None


@dataclass
class Column:
    table: str          # "shop.users", "shop.billing.invoices"
    column: str
    kind: str
    #: what removes or rewrites it; empty: uncovered
    covered_by: list[str] = field(default_factory=list)


@dataclass
class Coverage:
    config_path: str
    config_sha256: str
    tables: int                       # tables read, in every database of the policy
    columns: list[Column]

    @property
    def uncovered(self) -> list[Column]:
        return [c for c in self.columns if not c.covered_by]

    def to_dict(self) -> dict:
        return {"config": {"path": self.config_path, "sha256": self.config_sha256}, "tables": self.tables,
                "personal_columns": len(self.columns), "uncovered": len(self.uncovered),
                "columns": [asdict(c) for c in self.columns]}


def build(binding) -> Coverage:
    """The coverage of every table in ``binding``'s catalog (a catalog of whole databases)."""
    from retention.requests.erase import _request_binding, anonymize_strategies, linked_tables
    config, catalog = binding.config, binding.catalog
    as_requests_see_it = _request_binding(binding)      # a hold register is never erased
    rules = [r for r in config.rules if r.enabled]
    reasons: dict[tuple[str, str | None], list[str]] = {}

    def say(table: str, column: str | None, why: str) -> None:
        reasons.setdefault((table, column), []).append(why)

    deleted = []
    for r in rules:
        rows = "the rows its conditions match" if r.where or r.where_sql else "the rows"
        if r.action == "delete":
            say(r.table, None, f"rule {r.name} deletes {rows} ({r.after} after {r.clock})")
            deleted.append(r.table)
        elif r.action == "anonymize":
            for column, spec in r.columns.items():
                strategy = spec if isinstance(spec, str) else spec.get("strategy", "?")
                say(r.table, column, f"rule {r.name} anonymizes it in {rows} ({strategy}, {r.after} after {r.clock})")
    reached, frontier = set(deleted), list(deleted)
    while frontier:
        parent = frontier.pop()
        for fk in catalog.children_of(parent):
            if binding.parent_action(fk) == "delete" and fk.child not in reached:
                reached.add(fk.child)
                frontier.append(fk.child)
                say(fk.child, None, f"deleted with its parent row in {parent} (on_parent_delete = \"delete\")")
    for q in config.model.requests:
        exclude = set(as_requests_see_it.registers) | set(q.keep)
        exclude |= {q.table} if q.table != "state.requests" else set()
        for table, _paths in linked_tables(as_requests_see_it, q.subject, exclude=exclude):
            specs = anonymize_strategies(binding, table) if q.action == "anonymize" else {}
            if not specs:
                say(table, None, f"request {q.name} deletes the person's rows (within {q.deadline})")
            for column in specs:
                say(table, column, f"request {q.name} anonymizes the person's rows (within {q.deadline})")
    found = []
    for key in sorted(catalog.tables):
        for col in catalog.tables[key].table.columns:
            kind = kind_of(key, col.name)
            if kind is None or col.primary_key:
                continue
            found.append(Column(key, col.name, kind, reasons.get((key, None), []) + reasons.get((key, col.name), [])))
    return Coverage(config.path, config.sha256, len(catalog.tables), found)


# -- renderers -------------------------------------------------------------------

FORMATS = ("text", "json", "markdown", "html")


def _rows(cov: Coverage) -> list[list[str]]:
    return [[c.table, c.column, c.kind, "; ".join(c.covered_by) or "UNCOVERED"] for c in cov.columns]


def _summary(cov: Coverage) -> str:
    return (f"{len(cov.columns)} personal-looking columns in {cov.tables} tables; {len(cov.uncovered)} uncovered "
            f"(nothing in the policy ever deletes or rewrites them)")


HEADER = ["table", "column", "looks like", "covered by"]


def render(cov: Coverage, fmt: str) -> str:
    import json

    from retention.report import text as say
    if fmt == "json":
        return json.dumps(cov.to_dict(), indent=2) + "\n"
    rows = [[say.clean(v) for v in row] for row in _rows(cov)]
    if fmt == "text":
        lines = ["RETENTION COVERAGE (column names only: no row was read)",
                 f"config  {say.clean(cov.config_path)} (sha256 {say.short_sha(cov.config_sha256)})", ""]
        lines += say.format_table(HEADER, rows) if rows else ["no personal-looking columns"]
        return "\n".join(lines + ["", _summary(cov)]) + "\n"
    if fmt == "markdown":
        from retention.report.markdown import cell, table
        out = ["# Retention coverage", "", "Column names only: no row was read.", "",
               f"- **config:** {cell(say.clean(cov.config_path))} (sha256 {say.short_sha(cov.config_sha256)})", ""]
        out += table([cell(h) for h in HEADER], [[cell(v) for v in row] for row in rows]) if rows else []
        return "\n".join(out + ["", cell(_summary(cov))]) + "\n"
    if fmt == "html":
        from retention.report.html import esc, page, table
        body = ["<h1>Retention coverage</h1>", '<p class="note">Column names only: no row was read.</p>',
                f"<p>config {esc(cov.config_path)} (sha256 {esc(say.short_sha(cov.config_sha256))})</p>"]
        if rows:
            body.append(table([esc(h) for h in HEADER],
                              [[esc(v) for v in row[:3]] + [esc(row[3]) if row[3] != "UNCOVERED"
                                                            else '<span class="bad">UNCOVERED</span>']
                               for row in rows]))
        return page("Retention coverage", body + [f"<p>{esc(_summary(cov))}</p>"])
    raise ValueError(f"unknown coverage format '{fmt}' (choose from {', '.join(FORMATS)})")
