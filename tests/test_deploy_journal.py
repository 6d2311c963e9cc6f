"""deploy/ keeps each receiver's local journal on storage that outlives its container or pod:
a journal on a container's own layer would be lost with the very deliveries it acknowledged."""

import re
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
JOURNAL = "/data/journal"  # the default `<data_dir>/journal` under the image's IDLEHOOK_DATA_DIR


def test_the_image_puts_the_journal_under_data() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"IDLEHOOK_DATA_DIR=/data\b", dockerfile)
    assert "mkdir -p /data/journal" in dockerfile  # a fresh named volume inherits its owner


def test_compose_mounts_a_named_volume_at_the_journal() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    mounts = [str(m) for m in compose["services"]["receiver"].get("volumes", [])]
    named = [m.split(":")[0] for m in mounts if m.split(":")[1] == JOURNAL]
    assert named, mounts
    assert named[0] in compose["volumes"]


def test_kubernetes_receivers_keep_a_volume_claim_each() -> None:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "receiver.yaml").read_text()) if d]
    [receiver] = [
        d for d in docs if d["metadata"]["name"] == "idlehook-receiver" and d["kind"] != "Service"
    ]
    assert receiver["kind"] == "StatefulSet"
    claims = {c["metadata"]["name"] for c in receiver["spec"]["volumeClaimTemplates"]}
    [container] = receiver["spec"]["template"]["spec"]["containers"]
    mounts: list[dict[str, Any]] = container["volumeMounts"]
    assert {m["name"] for m in mounts if m["mountPath"] == JOURNAL} <= claims
    assert any(m["mountPath"] == JOURNAL for m in mounts)


def test_systemd_keeps_the_journal_in_its_state_directory() -> None:
    unit = (DEPLOY / "systemd" / "idlehook.service").read_text()
    assert re.search(r"^StateDirectory=idlehook$", unit, re.M)
    path = re.search(r"^Environment=IDLEHOOK_JOURNAL__PATH=(\S+)$", unit, re.M)
    assert path is not None
    assert path.group(1).startswith("/var/lib/idlehook/")
