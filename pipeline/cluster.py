"""Offline check of a Ray cluster launcher file (`eqcvt-search cluster-check cluster.yaml`).

Two layers, both before any cloud call: Ray's own schema (the same `prepare_config` +
`validate_config` that `ray up` runs), then the rules this project needs on a cluster: the
image's Ray version equals the pin (a mismatch fails late and obscurely), results go to shared
storage (Ray no longer syncs trial files between nodes), the head runs no trials, MLflow and the
dashboard listen on loopback only, and Ray's token auth stays on.

This is the one module besides pipeline/tune/ that touches ray: it imports Ray's autoscaler
utilities, lazily, inside `ray_schema_errors`.
"""

from __future__ import annotations

import argparse
import copy
import logging
import re
import shlex
import sys
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

SHARED_SCHEMES = ("s3://", "gs://")
LOOPBACK = ("127.0.0.1", "localhost")
COMMAND_KEYS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)
_RAY_PIN = re.compile(r"^ray(\[[^\]]*\])?\s*==\s*([0-9][\w.]*)\s*$")


def load(path: str | Path) -> dict[str, Any]:
    """Read a cluster YAML; an unreadable or non-mapping file is an error naming the file."""
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read cluster file: {err}") from err
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a cluster file is a YAML mapping")
    return config


def ray_pin(pyproject: str | Path | None = None) -> str:
    """The `ray==X` version the project pins: from pyproject.toml (source tree) or the installed
    distribution's metadata."""
    path = Path(pyproject) if pyproject else Path(__file__).resolve().parents[1] / "pyproject.toml"
    if path.is_file():
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            requirements = re.findall(r'"(ray[^"]*)"', path.read_text())
        else:
            requirements = tomllib.loads(path.read_text())["project"]["dependencies"]
    elif pyproject:
        raise ValueError(f"{pyproject}: no such file")
    else:
        requirements = metadata.requires("eqcvt-search") or []
    for requirement in requirements:
        match = _RAY_PIN.match(requirement.split(";")[0].strip())
        if match:
            return match.group(2)
    raise ValueError(f"{path}: no exact ray pin (ray[...]==X.Y.Z) among the dependencies")


def ray_schema_errors(config: dict[str, Any]) -> list[str]:
    """What `ray up` itself would refuse: defaults merged, then Ray's JSON schema and checks."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    ray_log = logging.getLogger("ray.autoscaler._private.util")  # chatty INFO about defaults
    level = ray_log.level
    ray_log.setLevel(logging.WARNING)
    try:
        validate_config(prepare_config(copy.deepcopy(config)))
    except Exception as err:  # jsonschema.ValidationError, ValueError, KeyError, ...
        message = getattr(err, "message", None) or str(err)
        where = "/".join(str(p) for p in getattr(err, "absolute_path", ()))
        return [f"Ray schema: {where + ': ' if where else ''}{message}"]
    finally:
        ray_log.setLevel(level)
    return []


def _commands(config: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Every shell command in the file, with where it sits (global and per node type)."""
    for key in COMMAND_KEYS:
        for command in config.get(key) or []:
            yield key, str(command)
    for name, node in (config.get("available_node_types") or {}).items():
        for key in ("initialization_commands", "worker_setup_commands"):
            for command in (node or {}).get(key) or []:
                yield f"available_node_types.{name}.{key}", str(command)


def _flag_values(command: str, *flags: str) -> list[str]:
    """Values of `--flag value` / `--flag=value` in a shell command (quotes understood)."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    values = []
    for i, word in enumerate(words):
        for flag in flags:
            if word == flag and i + 1 < len(words):
                values.append(words[i + 1])
            elif word.startswith(flag + "="):
                values.append(word[len(flag) + 1 :])
    return values


def _number(value: Any) -> float:
    """A resource amount, 0 for anything else (Ray's schema reports the bad type)."""
    return float(value) if isinstance(value, (int, float)) else 0.0


def _bucket(uri: str) -> str:
    return uri.split("://", 1)[1].split("/", 1)[0] if "://" in uri else ""


def _images(config: dict[str, Any]) -> Iterator[tuple[str, str]]:
    docker = config.get("docker") or {}
    for key in ("image", "head_image", "worker_image"):
        if docker.get(key):
            yield f"docker.{key}", str(docker[key])
    for name, node in (config.get("available_node_types") or {}).items():
        image = ((node or {}).get("docker") or {}).get("worker_image")
        if image:
            yield f"available_node_types.{name}.docker.worker_image", str(image)


def image_errors(config: dict[str, Any], pin: str) -> list[str]:
    """Every container must run the pinned Ray: a mismatch breaks the cluster in obscure ways."""
    images = list(_images(config))
    if not images:
        return ["docker.image: missing; without a pinned image the nodes run whatever Ray they have"]
    errors = []
    for where, image in images:
        tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
        if tag != pin and not tag.startswith(pin + "-"):
            errors.append(
                f"{where}: image {image!r} does not carry Ray {pin} (the ray pin in "
                f"pyproject.toml); use e.g. rayproject/ray:{pin}-py311-gpu"
            )
    return errors


def storage_errors(config: dict[str, Any]) -> list[str]:
    """Checkpoints must live where every node, `resume` and `final` can read them."""
    eqcvt = (config.get("metadata") or {}).get("eqcvt") or {}
    storage = str(eqcvt.get("storage_path") or "")
    errors = []
    if not storage:
        errors.append("metadata.eqcvt.storage_path: missing (an s3:// or gs:// URI)")
    elif not storage.startswith(SHARED_SCHEMES):
        errors.append(
            f"metadata.eqcvt.storage_path: {storage!r} is not shared storage; Ray does not sync "
            "trial files between nodes, so use an s3:// or gs:// URI"
        )
    for where, command in _commands(config):
        for path in _flag_values(command, "--storage-path", "--artifacts-destination"):
            if not path.startswith(SHARED_SCHEMES):
                errors.append(f"{where}: {path!r} is local to one node; use an s3:// or gs:// URI")
            elif storage.startswith(SHARED_SCHEMES) and _bucket(path) != _bucket(storage):
                errors.append(
                    f"{where}: {path!r} is not in the bucket of metadata.eqcvt.storage_path "
                    f"({_bucket(storage)!r}); edit both together"
                )
    return errors


def head_errors(config: dict[str, Any]) -> list[str]:
    """The head runs the driver, GCS and MLflow; trials there would starve them."""
    head_type = config.get("head_node_type")
    head = (config.get("available_node_types") or {}).get(head_type) or {}
    resources = head.get("resources") or {}
    errors = []
    if resources.get("CPU") != 0:
        errors.append(
            f"available_node_types.{head_type}.resources: the head must advertise CPU: 0 so that "
            f"no trial is placed on it (found {resources!r})"
        )
    if _number(resources.get("GPU")):
        errors.append(f"available_node_types.{head_type}.resources: the head must have no GPU")
    for command in config.get("head_start_ray_commands") or []:
        for value in _flag_values(str(command), "--num-cpus", "--num-gpus"):
            if value not in ("0", "0.0"):
                errors.append(f"head_start_ray_commands: gives the head resources ({command!r})")
    workers = [
        name
        for name, node in (config.get("available_node_types") or {}).items()
        if name != head_type and _number(((node or {}).get("resources") or {}).get("GPU")) > 0
    ]
    if not workers:
        errors.append("available_node_types: no worker type with GPUs for the trials")
    return errors


def exposure_errors(config: dict[str, Any]) -> list[str]:
    """Only SSH may face the outside; MLflow, the dashboard and Ray itself stay private."""
    errors = []
    mlflow_on_head = False
    for where, command in _commands(config):
        words = command.split()
        if "mlflow" in words and ("server" in words or "ui" in words):
            mlflow_on_head |= where.startswith("head_")
            hosts = _flag_values(command, "--host", "-h")
            if not hosts or any(h not in LOOPBACK for h in hosts):
                errors.append(
                    f"{where}: the MLflow server must be bound to 127.0.0.1 "
                    f"(--host 127.0.0.1), found {hosts or 'no --host'}"
                )
        for host in _flag_values(command, "--dashboard-host", "--host", "--bind"):
            if host not in LOOPBACK and "mlflow" not in words:
                errors.append(f"{where}: listens on {host!r}; keep it on 127.0.0.1")
        if re.search(r"(?<![\d.])0\.0\.0\.0(?![\d.])|\[::\]", command):
            errors.append(f"{where}: binds a public interface (0.0.0.0/::): {command!r}")
        if re.search(r"\bRAY_AUTH_MODE=(?!token\b)", command):
            errors.append(f"{where}: turns Ray's token auth off; keep RAY_AUTH_MODE=token")
    if not mlflow_on_head:
        errors.append("head_setup_commands: no `mlflow server` started on the head")
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [str(c) for c in config.get(key) or [] if "ray start" in str(c)]
        if not starts or not all("RAY_AUTH_MODE=token" in c for c in starts):
            errors.append(f"{key}: `ray start` must run with RAY_AUTH_MODE=token")
    docker = config.get("docker") or {}
    for key in ("run_options", "head_run_options", "worker_run_options"):
        for option in docker.get(key) or []:
            if re.match(r"^(-p\b|-P\b|--publish)", str(option).strip()):
                errors.append(f"docker.{key}: {option!r} publishes a container port")
    rules = ((config.get("provider") or {}).get("security_group") or {}).get("IpPermissions") or []
    for rule in rules:
        if (rule.get("FromPort"), rule.get("ToPort")) != (22, 22):
            errors.append(
                f"provider.security_group.IpPermissions: {rule!r} opens more than SSH (port 22)"
            )
    return errors


def check(path: str | Path, pyproject: str | Path | None = None) -> list[str]:
    """All problems with a cluster file, Ray's first; an empty list means it may go to `ray up`."""
    config = load(path)
    errors = ray_schema_errors(config)
    errors += image_errors(config, ray_pin(pyproject))
    errors += storage_errors(config)
    errors += head_errors(config)
    errors += exposure_errors(config)
    return errors


def main(argv: Sequence[str] | None = None) -> int:
    """`eqcvt-search cluster-check FILE...`: exit 0 when every file passes, 1 otherwise."""
    parser = argparse.ArgumentParser(
        prog="eqcvt-search cluster-check",
        description="Validate Ray cluster launcher files offline (Ray schema + project rules).",
    )
    parser.add_argument("files", nargs="+", metavar="cluster.yaml")
    parser.add_argument("--pyproject", default=None, help="pyproject.toml holding the ray pin")
    args = parser.parse_args(argv)
    failed = False
    for file in args.files:
        try:
            errors = check(file, args.pyproject)
        except ValueError as err:
            errors = [str(err)]
        if errors:
            failed = True
            print(f"{file}: {len(errors)} problem(s)", file=sys.stderr)
            for error in errors:
                print(f"  - {error}", file=sys.stderr)
        else:
            print(f"{file}: ok (Ray schema, Ray {ray_pin(args.pyproject)} image, shared storage, "
                  "head without trials, loopback-only services, token auth)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
