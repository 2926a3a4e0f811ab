"""Where backups live: a local directory, or S3-compatible object storage.

A store lists its backups (name, modification time, tags where it has them)
and removes backups by name.  It never looks below its own level: a local
store lists the regular files directly in its directory, an S3 store the
objects directly under its prefix (``s3://bucket/prefix`` lists
``prefix/*``, not ``prefix/sub/*``).

S3 goes through boto3, installed with the ``retention[s3]`` extra.
Credentials and the endpoint come from boto3's own chain (environment,
profile, instance role; ``AWS_ENDPOINT_URL_S3`` for an S3-compatible
service), never from the policy file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from retention.errors import ConfigError, RetentionError


class StoreError(RetentionError):
    """Listing or removing failed (unreachable, missing, no permission); the message says which."""

    exit_code = 1


@dataclass(frozen=True)
class Entry:
    """One item of a store, before the pattern decides whether it is a backup."""

    name: str
    mtime: datetime
    tags: tuple[tuple[str, str], ...] = ()


class LocalStore:
    """Regular files directly in a directory (symbolic links and subdirectories are not backups)."""

    supports_tags = False

    def __init__(self, location: str) -> None:
        self.location = location
        self.path = Path(location).expanduser()

    def list(self, *, with_tags: bool = False) -> list[Entry]:
        """Every regular file in the directory, with its modification time."""
        try:
            entries = []
            with os.scandir(self.path) as it:
                for item in it:
                    if item.is_file(follow_symlinks=False):
                        stat = item.stat(follow_symlinks=False)
                        entries.append(Entry(item.name, datetime.fromtimestamp(stat.st_mtime_ns / 1e9, timezone.utc)))
            return entries
        except OSError as e:
            raise StoreError(f"cannot list {self.location}: {e.strerror}") from None

    def remove(self, name: str) -> None:
        """Remove one backup file (one already gone counts as removed, as in S3)."""
        try:
            (self.path / name).unlink(missing_ok=True)
        except OSError as e:
            raise StoreError(f"cannot remove {name} from {self.location}: {e.strerror}") from None


class S3Store:
    """Objects directly under ``s3://bucket/prefix``; object tags are the backups' tags."""

    supports_tags = True

    def __init__(self, location: str, client=None) -> None:
        self.location = location
        self.bucket, _, prefix = location[len("s3://"):].partition("/")
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client or _client()

    def list(self, *, with_tags: bool = False) -> list[Entry]:
        """Every object directly under the prefix; its tags too when ``with_tags``."""
        try:
            entries = []
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix, Delimiter="/")
            for page in pages:
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(self.prefix):]
                    if not name:
                        continue
                    tags: tuple = ()
                    if with_tags:
                        tag_set = self.client.get_object_tagging(Bucket=self.bucket, Key=obj["Key"])["TagSet"]
                        tags = tuple((t["Key"], t["Value"]) for t in tag_set)
                    entries.append(Entry(name, obj["LastModified"].astimezone(timezone.utc), tags))
            return entries
        except Exception as e:  # botocore's errors: name the class and code, never credentials
            raise StoreError(f"cannot list {self.location}: {_describe(e)}") from None

    def remove(self, name: str) -> None:
        """Remove one object (S3 reports success for a key already gone)."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + name)
        except Exception as e:
            raise StoreError(f"cannot remove {name} from {self.location}: {_describe(e)}") from None


def _describe(e: Exception) -> str:
    response = getattr(e, "response", None) or {}
    code = response.get("Error", {}).get("Code")
    return f"{type(e).__name__}" + (f" [{code}]" if code else f": {str(e).splitlines()[0] if str(e) else ''}")


def _client():
    try:
        import boto3
    except ImportError:
        raise ConfigError("s3:// locations need boto3: install the extra with "
                          "pip install 'retention[s3]'") from None
    return boto3.client("s3")


def open_store(location: str):
    """The store for a ``location``: ``s3://bucket/prefix`` or a local directory."""
    if location.startswith("s3://"):
        return S3Store(location)
    return LocalStore(location)
