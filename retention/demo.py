"""The embedded demo shop: a small, fake e-commerce database to point the job at.

:func:`create_demo` builds it with SQLAlchemy Core on any backend (SQLite by
default, PostgreSQL unchanged), five years of history before ``now``, so that
every rule in the root ``policies.toml`` has something to do and every
protection (legal holds, statutory floors, blocked cascades) has something to
protect::

    >>> from datetime import datetime
    >>> counts = create_demo("sqlite://", now=datetime(2026, 1, 1), scale=0.1)
    >>> counts["users"], counts["orders"]
    (200, 800)

Everything is drawn from ``random.Random(seed)`` and offsets from ``now``, so
the same ``seed`` and ``now`` give the same rows on every machine.  All
personal data is invented from the word lists below; e-mail addresses use the
reserved example domains, IPs the documentation and private ranges, card
numbers the well-known test prefixes.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

from sqlalchemy import (Column, Date, DateTime, ForeignKey, Index, Integer, MetaData, Numeric, String,
                        Table, Text, func, inspect, select)
from sqlalchemy.engine import Engine

from retention.dialects.drivers import create_engine
from retention.durations import subtract_months
from retention.errors import ConfigError
from retention.log import mask_text

METADATA = MetaData()


def _id() -> Column:
    return Column("id", Integer, primary_key=True)


def _ts(name: str, nullable: bool = True) -> Column:
    # Naive UTC on purpose: that is what most application databases hold, and
    # the job reads such timestamps in settings.timezone.
    return Column(name, DateTime(timezone=False), nullable=nullable)


# No ON DELETE CASCADE anywhere: the job must find and handle children itself.
# Columns a reference may lose (detach) are nullable; all others are NOT NULL.
users = Table(
    "users", METADATA, _id(),
    Column("email", String(255), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("phone", String(40)), Column("birth_date", Date), _ts("parental_consent_at"),
    _ts("created_at", nullable=False),
    Column("status", String(20), nullable=False), _ts("closed_at"),  # active | closed
    Column("last_ip", String(45)),  # 45 = longest textual IPv6
    Column("avatar_url", String(500)), _ts("anonymized_at"), _ts("restricted_at"))
merchants = Table(
    "merchants", METADATA, _id(),
    Column("name", String(200), nullable=False),
    Column("owner_user_id", ForeignKey("users.id")),  # NULL: run by the platform itself
    Column("country", String(2), nullable=False),
    Column("status", String(20), nullable=False),  # active | closed
    _ts("created_at", nullable=False), _ts("closed_at"))
merchant_customers = Table(
    "merchant_customers", METADATA, _id(),
    Column("merchant_id", ForeignKey("merchants.id"), nullable=False),
    Column("user_id", ForeignKey("users.id"), nullable=False),
    Column("email", String(255), nullable=False), Column("name", String(200), nullable=False),
    _ts("joined_at", nullable=False))
addresses = Table(
    "addresses", METADATA, _id(),
    Column("user_id", ForeignKey("users.id"), nullable=False),
    Column("line1", String(200), nullable=False), Column("city", String(100), nullable=False),
    Column("postcode", String(20), nullable=False), Column("country", String(2), nullable=False),
    _ts("created_at", nullable=False))
orders = Table(
    "orders", METADATA, _id(),
    Column("user_id", ForeignKey("users.id"), nullable=False),
    Column("merchant_id", ForeignKey("merchants.id"), nullable=False),
    Column("status", String(20), nullable=False),  # open | completed | cancelled | refunded
    _ts("created_at", nullable=False),
    _ts("completed_at"),  # NULL while open, and for cancelled orders
    Column("total", Numeric(12, 2), nullable=False), Column("currency", String(3), nullable=False),
    Column("buyer_name", String(200)), Column("shipping_address", String(400)),
    _ts("anonymized_at"))
order_items = Table(
    "order_items", METADATA, _id(),
    Column("order_id", ForeignKey("orders.id"), nullable=False),
    Column("sku", String(20), nullable=False), Column("product_name", String(200), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_price", Numeric(12, 2), nullable=False))
payments = Table(
    "payments", METADATA, _id(),
    Column("order_id", ForeignKey("orders.id"), nullable=False),
    Column("card_number", String(19), nullable=False),
    Column("card_holder", String(200), nullable=False),
    Column("amount", Numeric(12, 2), nullable=False), Column("currency", String(3), nullable=False),
    _ts("paid_at", nullable=False), _ts("anonymized_at"))
access_logs = Table(
    "access_logs", METADATA, _id(),
    Column("user_id", ForeignKey("users.id")),  # NULL for anonymous visitors
    Column("ip", String(45), nullable=False), Column("method", String(8), nullable=False),
    Column("path", String(500), nullable=False), Column("status_code", Integer, nullable=False),
    Column("user_agent", String(500)), _ts("created_at", nullable=False))
support_messages = Table(
    "support_messages", METADATA, _id(),
    Column("user_id", ForeignKey("users.id"), nullable=False),
    Column("body", Text, nullable=False), _ts("created_at", nullable=False), _ts("restricted_at"))
legal_holds = Table(
    "legal_holds", METADATA, _id(),
    Column("user_id", ForeignKey("users.id"), nullable=False),
    Column("reason", String(500), nullable=False),
    _ts("placed_at", nullable=False), _ts("released_at"))
erasure_requests = Table(
    "erasure_requests", METADATA, _id(),
    Column("user_id", ForeignKey("users.id")),  # NULL once the person is gone
    _ts("received_at", nullable=False),
    Column("status", String(20), nullable=False),  # pending | done | partial | rejected
    _ts("completed_at"))

# Every foreign key is indexed: a delete's cascade and blocking checks look children up by it.
for _table in METADATA.sorted_tables:
    for _fk in _table.foreign_keys:
        Index(f"ix_{_table.name}_{_fk.parent.name}", _fk.parent)

#: Table names in insert (parent-first) order.
SCHEMA_TABLES: tuple[str, ...] = tuple(t.name for t in METADATA.sorted_tables)

_FIRST = ("Aisha Ben Carla Dmitri Elena Farid Grace Hiro Ines Jonas Kavya Liam Maya Nikolai "
          "Olivia Pedro Qing Rosa Samir Tara Umar Valentina Wei Ximena Yusuf Zoe Anton Beatriz "
          "Chen Dana Emil Fatima Gustav Hana Ivan Julia Kofi Lena Mateo Noor").split()
_LAST = ("Abbott Bauer Castillo Dubois Eriksen Fischer Garcia Hansen Ito Jansen Kowalski Larsen "
         "Moreau Novak Okafor Petrov Quinn Rossi Schmidt Tanaka Ueda Varga Walsh Xu Yilmaz "
         "Zimmermann Andersson Brennan Costa Dimitrov Evans Ferreira Gallagher Horvat Ivanova "
         "Jovanovic Keller Lindqvist Mendes Nakamura").split()
_STREETS = ("Linden Harbour Mill Station Church Orchard Meadow Bridge Market Chestnut Willow "
            "Castle River Garden King Queen Elm Oak Maple Cedar").split()
_STREET_KINDS = ("Street", "Road", "Lane", "Avenue", "Way", "Close")
# (city, country, postcode pattern: 9 = digit, A = letter)
_CITIES = (
    ("London", "GB", "AA9 9AA"), ("Manchester", "GB", "A99 9AA"), ("Bristol", "GB", "AA9 9AA"),
    ("Berlin", "DE", "99999"), ("Hamburg", "DE", "99999"), ("Munich", "DE", "99999"),
    ("Lyon", "FR", "99999"), ("Lille", "FR", "99999"), ("Utrecht", "NL", "9999 AA"),
    ("Rotterdam", "NL", "9999 AA"), ("Dublin", "IE", "A99 A9A9"), ("Cork", "IE", "A99 A9A9"),
    ("Portland", "US", "99999"), ("Austin", "US", "99999"), ("Denver", "US", "99999"))
_CURRENCY = {"GB": "GBP", "US": "USD"}  # everything else trades in EUR
_DOMAINS = ("example.com", "example.org", "example.net")
_SHOP_WORDS = ("Northwind Bluebell Copper Golden Silver Harbor Evergreen Little Urban Wild "
               "Sunny Maple").split()
_SHOP_KINDS = ("Outfitters", "Books", "Kitchenware", "Toys", "Tea Co.", "Cycles", "Ceramics",
               "Garden Supply", "Electronics", "Apparel", "Pet Store", "Stationery")
_PRODUCTS = tuple((name, Decimal(price)) for name, price in (item.split("=") for item in (
    "Linen tea towel=8.50;Enamel mug=12.00;Hardback notebook=14.95;Fountain pen=39.00;"
    "Wool beanie=24.00;Canvas tote bag=18.00;Bike light set=29.99;Puncture repair kit=6.49;"
    "Ceramic planter=22.50;Loose-leaf green tea=9.80;Cast iron skillet=54.00;Chef's knife=79.00;"
    "Wooden puzzle=19.50;Plush fox=16.00;USB-C charger=25.00;Wireless earbuds=89.00;"
    "Dog lead=15.00;Cat scratching post=34.90;Rain jacket=119.00;Merino socks=13.50;"
    "Paperback novel=10.99;Garden gloves=11.25;Seed collection=7.95;Desk lamp=45.00").split(";")))
_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Mobile Safari/537.36",
    "curl/8.5.0")
_PATHS = ("/", "/products/{n}", "/products/{n}", "/search?q={word}", "/cart", "/checkout",
          "/account", "/account/orders", "/login", "/help")
_MESSAGES = (
    "Hello, order #{order} has not arrived yet. Could you check the tracking for me?",
    "The item in order #{order} arrived damaged. How do I return it?",
    "I was charged twice for order #{order}, please refund one of the payments.",
    "Can I change the delivery address on order #{order}? I am moving next week.",
    "How do I reset my password? The reset e-mail never arrives.",  # _MESSAGES[4]: no order
    "Please remove my phone number from my account.", "Thanks for the help, all sorted now.",
    "Do you ship to {city}? I could not select it at checkout.")
_HOLD_REASONS = ("Chargeback dispute with card issuer", "Police request: suspected fraud ring",
                 "Civil claim pending in small claims court", "Regulator inquiry into consent")
_CARD_PREFIXES = ("411111", "400000", "555555", "522222")  # public test-card ranges
_CHUNK = 2000  # rows per executemany call


@dataclass
class _Person:
    """What the generator remembers about a user while building later tables."""

    created_at: datetime
    birth_date: date
    minor: bool
    closed_at: datetime | None = None
    consent_at: datetime | None = None
    id: int = 0
    name: str = ""
    email: str = ""
    last_ip: str = ""
    addresses: list[str] = field(default_factory=list)
    cards: list[str] = field(default_factory=list)
    shops: list[tuple] = field(default_factory=list)  # favourite merchants
    order_ids: list[int] = field(default_factory=list)


# The demo's own mark on a database: a one-row table written before its other
# tables.  Kept out of METADATA so the shop's tables and counts stay what they are.
_MARKER_METADATA = MetaData()
MARKER = Table("retention_demo", _MARKER_METADATA,
               Column("id", Integer, primary_key=True, autoincrement=False),
               Column("note", String(200), nullable=False))
MARKER_NOTE = "built by `retention demo`, which may drop and rebuild its tables here"


class DemoRefused(ConfigError):
    """The demo's target holds tables of the demo's names that the demo did not create."""


def _check_ours(engine: Engine, url: str) -> None:
    """Refuse (changing nothing) unless every demo-named table here was built by the demo.

    A table counts as the demo's only if the marker table says the demo built
    this database and the table still has exactly the demo's columns: an
    application table that merely shares a name (``users``, ``orders``) is
    never dropped.
    """
    inspector = inspect(engine)
    existing = set(inspector.get_table_names())
    present = [name for name in SCHEMA_TABLES if name in existing]
    marked = False
    if MARKER.name in existing:
        columns = {c["name"] for c in inspector.get_columns(MARKER.name)}
        if columns == {c.name for c in MARKER.columns}:
            with engine.connect() as conn:
                marked = conn.execute(select(MARKER.c.note).where(MARKER.c.id == 1)).scalar() == MARKER_NOTE
        if not marked:
            present.append(MARKER.name)
    if not present:
        return
    if not marked:
        why = (f"no '{MARKER.name}' table of the demo's says it built them" if MARKER.name not in present
               else f"the '{MARKER.name}' table there was not written by the demo")
        raise DemoRefused(f"refusing to build the demo at {mask_text(url)}: table(s) {', '.join(present)} "
                          f"exist there and the demo did not create them ({why}); nothing was changed. "
                          f"Point --url at an empty database, or at one the demo built", where="--url")
    changed = [name for name in present
               if {c["name"] for c in inspector.get_columns(name)} != {c.name for c in METADATA.tables[name].columns}]
    if changed:
        raise DemoRefused(f"refusing to rebuild the demo at {mask_text(url)}: table(s) {', '.join(changed)} no "
                          f"longer have the demo's columns, so they may not be the demo's any more; nothing "
                          f"was changed", where="--url")


def create_demo(url: str = "sqlite:///retention-demo.db", *, now: datetime, seed: int = 7,
                scale: float = 1.0) -> dict[str, int]:
    """Create the demo shop at ``url`` (replacing an earlier demo there) and return row counts per table.

    ``now`` anchors all five years of history (naive = UTC; aware values are
    converted).  ``scale`` multiplies the row counts (1.0: about 2,000 users,
    8,000 orders, 30,000 access-log rows); small scales still contain every
    population the demo policy needs.

    Only tables the demo built are ever dropped: if ``url`` holds a table of a
    demo table's name that the demo did not create, :class:`DemoRefused`
    (exit 2) is raised and nothing is changed.
    """
    if now.tzinfo is not None:
        now = now.astimezone(timezone.utc).replace(tzinfo=None)
    rows = _Builder(random.Random(seed), now.replace(microsecond=0), scale).build()
    engine = create_engine(url)
    try:
        _check_ours(engine, url)
        # the mark first, committed: a build interrupted after it can still be rebuilt
        _MARKER_METADATA.create_all(engine)
        with engine.begin() as conn:
            if conn.execute(select(func.count()).select_from(MARKER)).scalar() == 0:
                conn.execute(MARKER.insert(), [{"id": 1, "note": MARKER_NOTE}])
        METADATA.drop_all(engine)
        METADATA.create_all(engine)
        with engine.begin() as conn:
            for table in METADATA.sorted_tables:
                data = rows[table.name]
                for start in range(0, len(data), _CHUNK):
                    conn.execute(table.insert(), data[start:start + _CHUNK])
            if engine.dialect.name == "postgresql":
                # Ids were given explicitly: move each serial sequence past them so
                # the application (and `retention request erase`) can insert rows.
                for table in METADATA.sorted_tables:
                    conn.execute(select(func.setval(
                        func.pg_get_serial_sequence(table.name, "id"),
                        select(func.coalesce(func.max(table.c.id), 0) + 1).scalar_subquery(),
                        False)))
    finally:
        engine.dispose()
    return {name: len(rows[name]) for name in SCHEMA_TABLES}


def describe_demo() -> str:
    """One paragraph on what :func:`create_demo` builds, for the `retention demo` output."""
    return (  # counts at scale 1; keep in step with _Builder.n
        "The demo shop is a fake marketplace with five years of history: about 2,000 customer "
        "accounts (some 15% closed, some recently and most long ago, and a few minors "
        "registered without parental consent), 60 merchants of which several have closed, "
        "their customer lists, 8,000 orders with items, card payments and shipping addresses, "
        "30,000 web access-log lines from IPv4 and IPv6 clients, support messages, a handful "
        "of legal holds (one released) and a few pending erasure requests. Every name, "
        "address, e-mail, phone and card number is invented; counts grow with the scale."
    )


class _Builder:
    """Generates every table's rows in memory, parents first, as lists of dicts."""

    def __init__(self, rng: random.Random, now: datetime, scale: float) -> None:
        self.rng, self.now = rng, now
        self.start = now - timedelta(days=5 * 365 + 1)
        self.adult_cutoff = subtract_months(now, 18 * 12).date()
        self.n = {name: max(low, round(base * scale)) for name, base, low in (
            ("users", 2000, 80), ("merchants", 60, 12), ("orders", 8000, 300),
            ("access_logs", 30000, 600), ("support_messages", 1500, 60))}
        self.rows: dict[str, list[dict]] = {name: [] for name in SCHEMA_TABLES}

    def build(self) -> dict[str, list[dict]]:
        for step in (self._users, self._merchants, self._orders, self._access_logs,
                     self._support_messages, self._holds_and_requests):
            step()  # in this order: each step draws on the people and orders before it
        return self.rows

    # -- helpers -----------------------------------------------------------
    def between(self, low: datetime, high: datetime) -> datetime:
        span = max(0, int((high - low).total_seconds()))
        return low + timedelta(seconds=self.rng.randint(0, span))

    def days_ago(self, low: float, high: float) -> datetime:
        return self.now - timedelta(seconds=self.rng.randint(int(low * 86400), int(high * 86400)))

    def pattern(self, text: str) -> str:
        return "".join(str(self.rng.randint(0, 9)) if c == "9" else
                       self.rng.choice("ABCDEFGHJKLMNPRSTWXY") if c == "A" else c for c in text)

    def ip(self) -> str:
        if self.rng.random() < 0.25:  # IPv6 from the documentation prefix 2001:db8::/32
            tail = self.rng.getrandbits(96)
            return str(ipaddress.IPv6Address((0x20010DB8 << 96) | tail))
        net = self.rng.choice(("192.0.2", "198.51.100", "203.0.113", "10.{}.{}"))
        net = net.format(self.rng.randint(0, 255), self.rng.randint(0, 255))
        return f"{net}.{self.rng.randint(1, 254)}"

    def card(self) -> str:
        """A 16-digit test-range card number with a valid Luhn check digit."""
        digits = self.rng.choice(_CARD_PREFIXES) + "".join(
            str(self.rng.randint(0, 9)) for _ in range(9))
        # Luhn: from the right, every other digit (starting with the one next
        # to the check digit) is doubled, its digits summed.
        total = sum(d if i % 2 else (2 * d - 9 if d > 4 else 2 * d)
                    for i, d in enumerate(int(c) for c in reversed(digits)))
        return digits + str(-total % 10)

    def window(self, person: _Person) -> tuple[datetime, datetime]:
        return person.created_at, person.closed_at or self.now

    # -- tables ------------------------------------------------------------
    def _users(self) -> None:
        rng, n = self.rng, self.n["users"]
        minors = set(rng.sample(range(n), max(4, round(n * 0.03))))
        closed = rng.sample([i for i in range(n) if i not in minors], round(n * 0.15))
        people = []
        for i in range(n):
            if i in minors:
                # Aged 14..18 (a month clear of the 18th birthday either way),
                # registered at 13 or older.
                birth = self.adult_cutoff + timedelta(days=rng.randint(31, 4 * 365))
                earliest = max(self.start, datetime.combine(birth, datetime.min.time())
                               + timedelta(days=13 * 366))
                created = self.between(earliest, self.now - timedelta(days=1))
            else:
                birth = self.adult_cutoff - timedelta(days=rng.randint(31, 60 * 365))
                created = self.between(self.start, self.now - timedelta(days=1))
            people.append(_Person(created_at=created, birth_date=birth, minor=i in minors))
        for k, i in enumerate(closed):
            p = people[i]
            # One in four closed in the last 30 days (still within the grace
            # period); the rest long enough ago for the anonymize rule.
            if k % 4 == 3 or p.created_at > self.now - timedelta(days=40):
                p.closed_at = self.between(max(p.created_at + timedelta(hours=1),
                                               self.now - timedelta(days=29)),
                                           self.now - timedelta(hours=1))
            else:
                p.closed_at = self.between(p.created_at + timedelta(days=1),
                                           self.now - timedelta(days=31))
        for k, i in enumerate(sorted(minors)):
            if k % 4 == 0:  # a quarter of the minors did get verified consent
                people[i].consent_at = people[i].created_at + timedelta(hours=rng.randint(1, 20))
        people.sort(key=lambda p: p.created_at)
        self.people = people
        for pid, p in enumerate(people, start=1):
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            local = rng.choice((f"{first}.{last}", f"{first[0]}{last}", f"{first}_{last}"))
            p.id, p.name, p.last_ip = pid, f"{first} {last}", self.ip()
            p.email = f"{local}{pid}@{rng.choice(_DOMAINS)}".lower()
            p.cards = [self.card() for _ in range(rng.choice((1, 1, 2)))]
            phone = rng.choice((f"+44 7700 900{rng.randint(0, 999):03d}",
                                f"+1 555-01{rng.randint(0, 99):02d}",
                                f"+49 176 {rng.randint(0, 9999999):07d}"))
            self.rows["users"].append({
                "id": pid, "email": p.email, "name": p.name,
                "phone": phone if rng.random() < 0.9 else None,
                "birth_date": p.birth_date, "parental_consent_at": p.consent_at,
                "created_at": p.created_at, "status": "closed" if p.closed_at else "active",
                "closed_at": p.closed_at, "last_ip": p.last_ip,
                "avatar_url": (f"https://cdn.example.com/avatars/{rng.getrandbits(64):016x}.png"
                               if rng.random() < 0.6 else None),
                "anonymized_at": None, "restricted_at": None})
            for _ in range(rng.choice((1, 1, 1, 2))):
                city, country, postcode = rng.choice(_CITIES)
                line1 = f"{rng.randint(1, 180)} {rng.choice(_STREETS)} {rng.choice(_STREET_KINDS)}"
                zipcode = self.pattern(postcode)
                at = (p.created_at + timedelta(minutes=rng.randint(1, 30)) if not p.addresses
                      else self.between(*self.window(p)))
                p.addresses.append(f"{line1}, {zipcode} {city}, {country}")
                self.rows["addresses"].append({
                    "id": len(self.rows["addresses"]) + 1, "user_id": pid, "line1": line1,
                    "city": city, "postcode": zipcode, "country": country, "created_at": at})

    def _merchants(self) -> None:
        rng, n = self.rng, self.n["merchants"]
        owners = [p for p in self.people if not p.minor and not p.closed_at]
        # Closures by design: long ago (> 1 year), in between, and within the
        # last 30 days, so the merchant rule has due and not-yet-due rows.
        plan = (["old"] * max(2, n // 8) + ["mid"] * max(1, n // 20) + ["recent"] * max(1, n // 20))
        plan += ["open"] * (n - len(plan))
        rng.shuffle(plan)
        names = [f"{w} {k}" for w in _SHOP_WORDS for k in _SHOP_KINDS]
        names = rng.sample(names, min(n, len(names)))
        self.shops = []
        for mid, fate in enumerate(plan, start=1):
            opened = self.start + timedelta(days=400 if fate == "old" else 900)
            created = self.between(self.start, opened)
            closed = {"old": self.between(created + timedelta(days=200), self.days_ago(400, 400)),
                      "mid": self.days_ago(45, 300), "recent": self.days_ago(2, 25)}.get(fate)
            country = rng.choice(_CITIES)[1]
            self.shops.append((mid, created, closed or self.now, _CURRENCY.get(country, "EUR")))
            owner = rng.choice(owners) if rng.random() < 0.7 else None
            self.rows["merchants"].append({
                "id": mid, "name": names[mid - 1] if mid <= len(names) else f"Shop {mid}",
                "owner_user_id": owner.id if owner else None, "country": country,
                "status": "closed" if closed else "active", "created_at": created,
                "closed_at": closed})

    def _orders(self) -> None:
        rng = self.rng
        # Half of the minors never ordered, so deleting them is not blocked
        # by transaction records; the other half shows the blocking.
        minors = [p for p in self.people if p.minor]
        buyers = [p for p in self.people if not p.minor] + minors[::2]
        drafts = []
        while len(drafts) < self.n["orders"]:
            person = rng.choice(buyers)
            # Most people keep going back to a few shops they like.
            person.shops = person.shops or rng.sample(self.shops, 3)
            mid, m_open, m_close, currency = rng.choice(
                person.shops if rng.random() < 0.8 else self.shops)
            low, high = max(self.window(person)[0], m_open), min(self.window(person)[1], m_close)
            if high - low > timedelta(hours=1):
                at = self.between(low, high - timedelta(minutes=30))
                drafts.append((at, person, mid, currency))
        drafts.sort(key=lambda d: d[0])
        crm: set[tuple[int, int]] = set()
        for oid, (created, person, mid, currency) in enumerate(drafts, start=1):
            completed = created + timedelta(seconds=rng.randint(86400, 10 * 86400))
            roll = rng.random()
            if completed >= self.now or (created > self.now - timedelta(days=14) and roll < 0.4):
                status, completed = "open", None
            elif roll < 0.07:
                status, completed = "cancelled", None
            else:
                status = "refunded" if roll < 0.11 else "completed"
            total = Decimal("0.00")
            for _ in range(rng.randint(1, 4)):
                index = rng.randrange(len(_PRODUCTS))
                name, price = _PRODUCTS[index]
                quantity = rng.choice((1, 1, 1, 2, 3))
                total += price * quantity
                self.rows["order_items"].append({
                    "id": len(self.rows["order_items"]) + 1, "order_id": oid,
                    "sku": f"SKU-{10400 + index * 37}", "product_name": name,
                    "quantity": quantity, "unit_price": price})
            person.order_ids.append(oid)
            if (mid, person.id) not in crm:  # the merchant's CRM learns of them now
                crm.add((mid, person.id))
                self.rows["merchant_customers"].append({
                    "id": len(crm), "merchant_id": mid, "user_id": person.id,
                    "email": person.email, "name": person.name, "joined_at": created})
            self.rows["orders"].append({
                "id": oid, "user_id": person.id, "merchant_id": mid, "status": status,
                "created_at": created, "completed_at": completed, "total": total,
                "currency": currency, "buyer_name": person.name,
                "shipping_address": rng.choice(person.addresses), "anonymized_at": None})
            if status != "cancelled" and (status != "open" or rng.random() < 0.5):
                self.rows["payments"].append({
                    "id": len(self.rows["payments"]) + 1, "order_id": oid,
                    "card_number": rng.choice(person.cards), "card_holder": person.name.upper(),
                    "amount": total, "currency": currency,
                    "paid_at": created + timedelta(seconds=rng.randint(20, 1800)),
                    "anonymized_at": None})

    def _access_logs(self) -> None:
        rng, drafts = self.rng, []
        for _ in range(self.n["access_logs"]):
            person = rng.choice(self.people) if rng.random() < 0.6 else None
            at = self.between(*(self.window(person) if person else (self.start, self.now)))
            ip = person.last_ip if person and rng.random() < 0.5 else self.ip()
            path = rng.choice(_PATHS).format(n=rng.randint(1, 5000),
                                             word=rng.choice(_STREETS).lower())
            status = rng.choice((200,) * 12 + (302, 304, 404, 500))
            drafts.append((at, person.id if person else None, ip, path, status))
        drafts.sort(key=lambda d: d[0])
        for lid, (at, uid, ip, path, status) in enumerate(drafts, start=1):
            self.rows["access_logs"].append({
                "id": lid, "user_id": uid, "ip": ip,
                "method": "POST" if path in ("/login", "/checkout") else "GET", "path": path,
                "status_code": status, "user_agent": rng.choice(_AGENTS), "created_at": at})

    def _support_messages(self) -> None:
        rng, drafts = self.rng, []
        for _ in range(self.n["support_messages"]):
            person = rng.choice(self.people)
            at = self.between(*self.window(person))
            earlier = [o for o in person.order_ids if self.rows["orders"][o - 1]["created_at"] < at]
            template = rng.choice(_MESSAGES)
            if "{order}" in template and not earlier:
                template = _MESSAGES[4]
            body = template.format(order=rng.choice(earlier or [0]), city=rng.choice(_CITIES)[0])
            drafts.append((at, person.id, body))
        drafts.sort(key=lambda d: d[0])
        self.rows["support_messages"] = [
            {"id": i, "user_id": uid, "body": body, "created_at": at, "restricted_at": None}
            for i, (at, uid, body) in enumerate(drafts, start=1)]

    def _holds_and_requests(self) -> None:
        rng, due = self.rng, self.now - timedelta(days=31)
        old_closed = [p for p in self.people if p.closed_at and p.closed_at < due]
        bare_minors = [p for p in self.people if p.minor and not p.consent_at]
        actives = [p for p in self.people if not p.closed_at and not p.minor]
        held = rng.sample(old_closed, 4)
        # Active holds: three closed accounts past the grace period, one minor
        # without consent, one active customer; the fourth closed one's hold
        # was released, so the job may now anonymize that account.
        cases = [(p, False) for p in held[:3] + [bare_minors[0], rng.choice(actives)]]
        cases.append((held[3], True))
        for hid, (p, released) in enumerate(cases, start=1):
            placed = self.between(p.created_at, self.days_ago(20, 20))
            self.rows["legal_holds"].append({
                "id": hid, "user_id": p.id, "reason": rng.choice(_HOLD_REASONS),
                "placed_at": placed,
                "released_at": self.between(placed, self.days_ago(2, 2)) if released else None})
        requesters = rng.sample(actives, 4)
        # (person, days ago received, status): the third is past a 15-day
        # deadline; done requests lost their link when the person was erased;
        # the partial one is a held customer whose held rows had to stay.
        requests = [(requesters[0], 2, "pending"), (requesters[1], 9, "pending"),
                    (requesters[2], 19, "pending"), (None, 200, "done"), (None, 420, "done"),
                    (held[0], 90, "partial"), (requesters[3], 60, "rejected")]
        for rid, (p, ago, status) in enumerate(requests, start=1):
            received = self.days_ago(ago, ago + 0.9)
            answered = received + timedelta(days=rng.randint(2, 12))
            completed = None if status == "pending" else answered
            self.rows["erasure_requests"].append({
                "id": rid, "user_id": p.id if p else None, "received_at": received,
                "status": status, "completed_at": completed})
