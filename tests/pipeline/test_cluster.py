"""cluster.yaml and its GCP twin pass Ray's schema and our rules; broken variants are refused."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline import cluster

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [ROOT / "cluster.yaml", ROOT / "cluster-gcp.yaml"]
PIN = cluster.ray_pin()


def _variant(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    config = copy.deepcopy(cluster.load(ROOT / "cluster.yaml"))
    edit(config)
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _replace_in_commands(key: str, old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        config[key] = [str(c).replace(old, new) for c in config[key]]
        assert config[key] != cluster.load(ROOT / "cluster.yaml")[key], "variant changed nothing"

    return edit


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_file_passes(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cluster.check(path) == []
    assert cluster.main([str(path)]) == 0
    assert "ok" in capsys.readouterr().out


def test_pin_matches_pyproject() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert f'"ray[tune]=={PIN}"' in text


def _set(*keys: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        node = config
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value

    return edit


REJECTED: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "wrong_ray_version": (_set("docker", "image", value="rayproject/ray:2.9.3-py311-gpu"), PIN),
    "unpinned_image": (_set("docker", "image", value="rayproject/ray:latest-gpu"), "does not carry"),
    "wrong_head_image": (_set("docker", "head_image", value="rayproject/ray:2.59.0-py311"), "head_image"),
    "no_docker": (lambda c: c.pop("docker"), "docker.image: missing"),
    "local_storage": (
        _set("metadata", "eqcvt", "storage_path", value="/home/ray/ray_results"),
        "not shared storage",
    ),
    "storage_missing": (lambda c: c["metadata"].pop("eqcvt"), "storage_path: missing"),
    "local_mlflow_artifacts": (
        _replace_in_commands("head_setup_commands", "s3://YOUR-BUCKET/eqcvt-search/mlflow-artifacts",
                             "/home/ray/mlflow/artifacts"),
        "local to one node",
    ),
    "artifacts_other_bucket": (
        _replace_in_commands("head_setup_commands", "s3://YOUR-BUCKET/", "s3://another-bucket/"),
        "not in the bucket",
    ),
    "head_with_cpus": (_set("available_node_types", "head", "resources", value={"CPU": 4}), "CPU: 0"),
    "head_resources_autodetected": (
        _set("available_node_types", "head", "resources", value={}), "CPU: 0"
    ),
    "head_start_with_cpus": (
        _replace_in_commands("head_start_ray_commands", "--head", "--head --num-cpus=4"),
        "gives the head resources",
    ),
    "no_gpu_workers": (
        lambda c: [n["resources"].pop("GPU") for k, n in c["available_node_types"].items()
                   if k != "head"],
        "no worker type with GPUs",
    ),
    "public_mlflow": (
        _replace_in_commands("head_setup_commands", "--host 127.0.0.1", "--host 0.0.0.0"),
        "MLflow server must be bound to 127.0.0.1",
    ),
    "mlflow_without_host": (
        _replace_in_commands("head_setup_commands", "--host 127.0.0.1 ", ""),
        "no --host",
    ),
    "no_mlflow_on_head": (
        lambda c: c.update(head_setup_commands=[x for x in c["head_setup_commands"]
                                                if "mlflow" not in x]),
        "no `mlflow server`",
    ),
    "public_dashboard": (
        _replace_in_commands("head_start_ray_commands", "--dashboard-host=127.0.0.1",
                             "--dashboard-host=0.0.0.0"),
        "0.0.0.0",
    ),
    "auth_disabled": (
        _replace_in_commands("worker_start_ray_commands", "RAY_AUTH_MODE=token",
                             "RAY_AUTH_MODE=disabled"),
        "token auth",
    ),
    "published_port": (
        _set("docker", "run_options", value=["-p 8265:8265"]), "publishes a container port"
    ),
    "open_security_group": (
        _set("provider", "security_group", value={"GroupName": "sg", "IpPermissions": [
            {"FromPort": 5000, "ToPort": 5000, "IpProtocol": "tcp",
             "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]}),
        "opens more than SSH",
    ),
    "schema_unknown_key": (_set("max_worker", value=4), "Ray schema"),
    "schema_bad_type": (
        _set("available_node_types", "gpu_spot", "resources", value={"CPU": "four", "GPU": 1}),
        "Ray schema",
    ),
    "schema_bad_gpu_type": (
        _set("available_node_types", "gpu_ondemand", "resources", value={"CPU": 4, "GPU": "one"}),
        "Ray schema",
    ),
    "schema_missing_head_type": (_set("head_node_type", value="nope"), "Ray schema"),
}


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_rejected_variant(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit, expected = REJECTED[name]
    path = _variant(tmp_path, edit)
    errors = cluster.check(path)
    assert errors, f"{name} was accepted"
    assert any(expected in e for e in errors), errors
    assert cluster.main([str(path)]) == 1
    assert expected in capsys.readouterr().err


def test_pin_change_rejects_shipped_file(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text((ROOT / "pyproject.toml").read_text().replace(PIN, "9.9.9"))
    errors = cluster.check(ROOT / "cluster.yaml", pyproject)
    assert any("9.9.9" in e for e in errors), errors


def test_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    assert cluster.main([str(bad), str(tmp_path / "missing.yaml")]) == 1
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "missing.yaml" in err
