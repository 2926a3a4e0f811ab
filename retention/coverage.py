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

#: kind -> what a column's name holds (whole words of the name, split at '_', digits and case changes, and
#: the whole name run together); the first kind that matches wins, so the more particular come first
KINDS: dict[str, tuple[str, ...]] = {
    "e-mail": ("email", "emails", "emailaddress", "mail"),
    "IP address": ("ip", "ips", "ipaddress", "ipaddr", "ipv4", "ipv6", "remoteaddr", "clientip"),
    "phone": ("phone", "phones", "phonenumber", "mobile", "telephone", "tel", "fax", "msisdn", "cellphone",
              "contactnumber"),
    "name": ("firstname", "lastname", "fullname", "surname", "givenname", "familyname", "middlename", "username",
             "cardholder", "holder", "recipient", "nickname", "displayname", "customername"),
    "birth date": ("birth", "birthday", "birthdate", "dateofbirth", "dob"),
    "gender": ("gender", "sex"),
    "card or account": ("cardnumber", "card", "pan", "iban", "bic", "accountnumber", "bankaccount"),
    "identity number": ("ssn", "passport", "nationalid", "taxid", "taxnumber", "nin", "driverlicense",
                        "licensenumber", "socialsecurity"),
    "position": ("latitude", "longitude", "lat", "lng", "lon", "geo", "geolocation", "location"),
    "device": ("useragent", "deviceid", "devicetoken", "imei", "idfa", "fingerprint"),
    "address": ("address", "addresses", "addr", "street", "streetaddress", "city", "zip", "zipcode", "postcode",
                "postalcode", "postal", "line1", "line2", "housenumber"),
}
#: words that name personal data only as the whole name or in one of PAIRS: "mobile" yes, "mobile_app_version"
#: no; "card_number" yes, "card_type" no
ALONE = {"mail", "mobile", "tel", "fax", "holder", "recipient", "card", "pan", "bic", "lat", "lon", "lng", "geo",
         "location", "fingerprint", "zip", "postal", "sex"}
#: two words that make one: first_name, ip_address, user_agent ...
PAIRS: dict[tuple[str, str], str] = {
    ("first", "name"): "firstname", ("last", "name"): "lastname", ("full", "name"): "fullname",
    ("given", "name"): "givenname", ("family", "name"): "familyname", ("middle", "name"): "middlename",
    ("display", "name"): "displayname", ("user", "name"): "username", ("user", "agent"): "useragent",
    ("device", "id"): "deviceid", ("device", "token"): "devicetoken", ("ip", "address"): "ipaddress",
    ("remote", "addr"): "remoteaddr", ("client", "ip"): "clientip", ("card", "number"): "cardnumber",
    ("card", "holder"): "cardholder", ("account", "number"): "accountnumber", ("bank", "account"): "bankaccount",
    ("national", "id"): "nationalid", ("tax", "id"): "taxid", ("tax", "number"): "taxnumber",
    ("driver", "license"): "driverlicense", ("license", "number"): "licensenumber",
    ("social", "security"): "socialsecurity", ("e", "mail"): "email", ("email", "address"): "emailaddress",
    ("date", "birth"): "birthdate", ("cell", "phone"): "cellphone", ("phone", "number"): "phonenumber",
    ("contact", "number"): "contactnumber", ("house", "number"): "housenumber", ("zip", "code"): "zipcode",
    ("postal", "code"): "postalcode", ("street", "address"): "streetaddress",
}
#: a last word that makes the column about something else: email_template_id, card_type, ip_range,
#: mail_sent_at, recipient_count, email_verified
NOT_THE_DATA = {"id", "ids", "type", "types", "brand", "count", "range", "template", "method", "cost", "status",
                "version", "format", "enabled", "sent", "at", "on", "flag", "verified", "confirmed", "optin",
                "provider", "hash", "valid", "bounced", "domain", "kind", "size", "cycle", "fee", "zone"}
#: a people's word: "name" after one is a person's name (buyer_name), and alone on a table of people
PEOPLE = {"user", "users", "customer", "customers", "cust", "contact", "contacts", "member", "members", "person",
          "people", "persons", "employee", "employees", "patient", "patients", "student", "students", "account",
          "accounts", "buyer", "buyers", "client", "clients", "subscriber", "subscribers", "guest", "guests",
          "owner", "sender", "author", "receiver", "signer", "profile", "profiles", "holder", "recipient"}

_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


def words(name: str) -> list[str]:
    """``"billingAddress_line1"`` -> ``["billing", "address", "line", "1", "line1", ...]``.

    The words, then the pairs of :data:`PAIRS` and a word with the number after it (line1),
    then the whole name run together (``IPv4`` -> ``ipv4``, ``CUSTOMERNAME`` -> ``customername``).
    """
    parts = [w.lower() for w in _WORD.findall(name)]
    joined = [PAIRS[(a, b)] for a, b in zip(parts, parts[1:]) if (a, b) in PAIRS]
    joined += [f"{a}{b}" for a, b in zip(parts, parts[1:]) if b.isdigit()]     # line1, ipv4
    return parts + joined + [re.sub(r"[^a-z0-9]", "", name.lower())]


def kind_of(table: str, column: str, type_: object = None) -> str | None:
    """What the column's name says it holds, or None when it says nothing personal (or is a boolean)."""
    import sqlalchemy as sa
    if isinstance(type_, sa.Boolean):
        return None
    parts = [w.lower() for w in _WORD.findall(column)]
    if not parts or (len(parts) > 1 and parts[-1] in NOT_THE_DATA):
        return None
    ws = words(column)
    strong = {w for w in ws[len(parts):]} | {w for w in parts if w not in ALONE}
    if len(parts) == 1:
        strong |= set(parts)
    for kind, names in KINDS.items():
        if strong & set(names):
            return kind
    if parts in (["name"], ["names"]) and set(words(table.rsplit(".", 1)[-1])) & PEOPLE:
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
    #: "every row": something reaches each row in time; "some rows": only rows a rule's conditions match,
    #: rows with a parent to cascade from, or people who ask; "none": uncovered
    reach: str = "none"


@dataclass
class Coverage:
    config_path: str
    config_sha256: str
    tables: int                       # tables read, in every database of the policy
    columns: list[Column]

    @property
    def uncovered(self) -> list[Column]:
        return [c for c in self.columns if c.reach == "none"]

    @property
    def partly(self) -> list[Column]:
        return [c for c in self.columns if c.reach == "some rows"]

    def to_dict(self) -> dict:
        return {"config": {"path": self.config_path, "sha256": self.config_sha256}, "tables": self.tables,
                "personal_columns": len(self.columns), "uncovered": len(self.uncovered),
                "some_rows_only": len(self.partly), "columns": [asdict(c) for c in self.columns]}


def build(binding) -> Coverage:
    """The coverage of every table in ``binding``'s catalog (a catalog of whole databases)."""
    from retention.requests.erase import _request_binding, anonymize_strategies, request_tables
    config, catalog = binding.config, binding.catalog
    as_requests_see_it = _request_binding(binding)      # a hold register is never erased
    rules = [r for r in config.rules if r.enabled]
    reasons: dict[tuple[str, str | None], list[tuple[str, bool]]] = {}

    def say(table: str, column: str | None, why: str, every_row: bool) -> None:
        reasons.setdefault((table, column), []).append((why, every_row))

    deleted: dict[str, bool] = {}      # table -> every row of it is deleted in time
    for r in rules:
        whole = not (r.where or r.where_sql)
        rows = "the rows" if whole else "the rows its conditions match"
        if r.action == "delete":
            say(r.table, None, f"rule {r.name} deletes {rows} ({r.after} after {r.clock})", whole)
            deleted[r.table] = deleted.get(r.table, False) or whole
        elif r.action == "anonymize":
            for column, spec in r.columns.items():
                strategy = spec if isinstance(spec, str) else spec.get("strategy", "?")
                say(r.table, column, f"rule {r.name} anonymizes it in {rows} ({strategy}, {r.after} after {r.clock})",
                    whole)
    frontier = list(deleted)
    while frontier:
        parent = frontier.pop()
        for fk in catalog.children_of(parent):
            if binding.parent_action(fk) != "delete":
                continue
            # a row whose key is NULL has no parent to be deleted with
            whole = deleted[parent] and not fk.nullable
            if fk.child not in deleted or (whole and not deleted[fk.child]):
                deleted[fk.child] = deleted.get(fk.child, False) or whole
                frontier.append(fk.child)
                say(fk.child, None, f"deleted with its parent row in {parent} (on_parent_delete = \"delete\")", whole)
    for q in config.model.requests:
        for table, _paths in request_tables(as_requests_see_it, q):
            specs = anonymize_strategies(binding, table) if q.action == "anonymize" else {}
            if not specs:
                say(table, None, f"request {q.name} deletes the person's rows (within {q.deadline})", False)
            for column in specs:
                say(table, column, f"request {q.name} anonymizes the person's rows (within {q.deadline})", False)
    found = []
    for key in sorted(catalog.tables):
        for col in catalog.tables[key].table.columns:
            kind = kind_of(key, col.name, col.type)
            if kind is None:
                continue
            why = reasons.get((key, None), []) + reasons.get((key, col.name), [])
            reach = "every row" if any(every for _w, every in why) else "some rows" if why else "none"
            found.append(Column(key, col.name, kind, [w for w, _every in why], reach))
    return Coverage(config.path, config.sha256, len(catalog.tables), found)


# -- renderers -------------------------------------------------------------------

FORMATS = ("text", "json", "markdown", "html")


def _rows(cov: Coverage) -> list[list[str]]:
    return [[c.table, c.column, c.kind, REACH[c.reach], "; ".join(c.covered_by) or "-"] for c in cov.columns]


#: how the reach column says it
REACH = {"every row": "every row", "some rows": "SOME ROWS ONLY", "none": "UNCOVERED"}


def _summary(cov: Coverage) -> str:
    return (f"{len(cov.columns)} personal-looking columns in {cov.tables} tables; {len(cov.uncovered)} uncovered "
            f"(nothing in the policy ever deletes or rewrites them), {len(cov.partly)} reached in some rows only "
            f"(a rule's conditions, a nullable key to cascade through, or a person's request)")


HEADER = ["table", "column", "looks like", "reached in", "by"]


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
                              [[esc(v) if i != 3 or v == "every row" else f'<span class="bad">{esc(v)}</span>'
                                for i, v in enumerate(row)] for row in rows]))
        return page("Retention coverage", body + [f"<p>{esc(_summary(cov))}</p>"])
    raise ValueError(f"unknown coverage format '{fmt}' (choose from {', '.join(FORMATS)})")
