"""A held subject's data includes the rows its own row references, on every engine.

``members.profile_id -> profiles.id``: the profile does not reference the
member, yet it is the member's data, so a hold on the member protects it (and
the photo the profile references, one key further).  ``check`` warns about a
rule table from which no foreign key leads to a held subject.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from retention import commands
from tests.shopkit import HASH_ENV, outcome, protected

NOW = datetime(2026, 6, 1, tzinfo=UTC)
OLD = datetime(2020, 1, 1)


def members_schema(shop) -> sa.MetaData:
    md = sa.MetaData()
    sa.Table("photos", md,
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("taken_at", sa.DateTime, nullable=False),
             sa.Column("url", sa.String(200)))
    sa.Table("profiles", md,
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("photo_id", sa.Integer, sa.ForeignKey("photos.id")),
             sa.Column("updated_at", sa.DateTime, nullable=False),
             sa.Column("bio", sa.String(200)))
    sa.Table("members", md,
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("profile_id", sa.Integer, sa.ForeignKey("profiles.id")),
             sa.Column("joined_at", sa.DateTime, nullable=False))
    sa.Table("member_holds", md,
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("member_id", sa.Integer, nullable=False),
             sa.Column("released_at", sa.DateTime))
    sa.Table("metrics", md,
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("at", sa.DateTime, nullable=False))
    md.create_all(shop.engine)
    # member 1 is held; member 2 is not; profile 3 and photo 3 belong to nobody
    with shop.engine.begin() as conn:
        conn.execute(md.tables["photos"].insert(), [dict(id=i, taken_at=OLD, url=f"p{i}") for i in (1, 2, 3)])
        conn.execute(md.tables["profiles"].insert(),
                     [dict(id=i, photo_id=i, updated_at=OLD, bio=f"bio {i}") for i in (1, 2, 3)])
        conn.execute(md.tables["members"].insert(), [dict(id=i, profile_id=i, joined_at=OLD) for i in (1, 2)])
        conn.execute(md.tables["member_holds"].insert(), [dict(id=1, member_id=1, released_at=None),
                                                          dict(id=2, member_id=2, released_at=OLD)])
    return md


MEMBERS = """
[subjects.member]
table = "shop.members"
key = "id"

[[holds]]
name = "dispute"
table = "shop.member_holds"
subject = "member"
subject_column = "member_id"
active_where = { released_at = { is_null = true } }

[tables."shop.members"]
on_parent_delete = "detach"

[tables."shop.profiles"]
on_parent_delete = "detach"
"""

PROFILES_PURGE = """
[[rules]]
name = "profiles-purge"
table = "shop.profiles"
clock = "updated_at"
after = "1y"
action = "delete"
max_fraction = 1.0
"""

def ids(shop, md, table: str) -> list[int]:
    t = md.tables[table]
    with shop.engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.select(t.c.id).order_by(t.c.id))]


def test_a_hold_protects_the_row_its_subject_references(shop):
    md = members_schema(shop)
    out = outcome(shop.run(shop.policy(MEMBERS + PROFILES_PURGE), now=NOW), "profiles-purge")
    assert protected(out) == {"hold:dispute": 1} and out.touch == 2
    assert ids(shop, md, "profiles") == [1]
    with shop.engine.connect() as conn:
        links = dict(conn.execute(sa.text("SELECT id, profile_id FROM members")).all())
    assert links == {1: 1, 2: None}


def test_a_hold_reaches_two_keys_down_from_its_subject(shop):
    md = members_schema(shop)
    # anonymize looks at the row alone (a delete would also see the held profile it detaches)
    policy = shop.policy(MEMBERS + """
    [[rules]]
    name = "photo-urls"
    table = "shop.photos"
    clock = "taken_at"
    after = "1y"
    action = "anonymize"
    max_fraction = 1.0
    columns = { url = { strategy = "null" } }
    """)
    out = outcome(shop.run(policy, now=NOW), "photo-urls")
    assert protected(out) == {"hold:dispute": 1} and out.touch == 2
    with shop.engine.connect() as conn:
        photos = md.tables["photos"]
        assert dict(conn.execute(sa.select(photos.c.id, photos.c.url)).all()) == {1: "p1", 2: None, 3: None}


def test_a_hold_keeps_an_owned_row_from_being_anonymized(shop):
    md = members_schema(shop)
    policy = shop.policy(MEMBERS + """
    [[rules]]
    name = "bios"
    table = "shop.profiles"
    clock = "updated_at"
    after = "1y"
    action = "anonymize"
    max_fraction = 1.0
    columns = { bio = { strategy = "null" } }
    """)
    out = outcome(shop.run(policy, now=NOW), "bios")
    assert protected(out) == {"hold:dispute": 1} and out.touch == 2
    with shop.engine.connect() as conn:
        assert dict(conn.execute(sa.select(md.tables["profiles"].c.id, md.tables["profiles"].c.bio)).all()) == \
            {1: "bio 1", 2: None, 3: None}


def test_check_warns_about_a_rule_table_no_hold_can_reach(shop):
    members_schema(shop)
    policy = shop.policy(MEMBERS + PROFILES_PURGE + """
    [[rules]]
    name = "metrics-purge"
    table = "shop.metrics"
    clock = "at"
    after = "1y"
    action = "delete"
    max_fraction = 1.0
    """)
    warnings = commands.check(policy, env=HASH_ENV).warnings
    unreachable = [w for w in warnings if "no hold can protect" in w]
    assert len(unreachable) == 1 and "shop.metrics" in unreachable[0] and "subject_path" in unreachable[0]


def test_no_reach_warning_without_holds(shop):
    members_schema(shop)
    policy = shop.policy("""
    [[rules]]
    name = "metrics-purge"
    table = "shop.metrics"
    clock = "at"
    after = "1y"
    action = "delete"
    max_fraction = 1.0
    """)
    assert not [w for w in commands.check(policy, env=HASH_ENV).warnings if "no hold can protect" in w]


def test_a_delete_keeps_a_row_its_held_subject_reaches_through_two_keys(shop):
    md = members_schema(shop)
    policy = shop.policy(MEMBERS + """
    [[rules]]
    name = "photos-purge"
    table = "shop.photos"
    clock = "taken_at"
    after = "1y"
    action = "delete"
    max_fraction = 1.0
    """)
    out = outcome(shop.run(policy, now=NOW), "photos-purge")
    assert protected(out) == {"hold:dispute": 1} and out.touch == 2
    assert ids(shop, md, "photos") == [1]
    assert shop.dangling() == []
