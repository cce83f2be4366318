"""Security basics: checkpoints are only ever read with weights_only=True (a malicious pickle runs no code), no other
unsafe deserialiser is used, and every server the project starts binds 127.0.0.1 by default."""

from __future__ import annotations

import ast
import functools
import ipaddress
from pathlib import Path

import pytest
import torch
from pydantic import BaseModel

from sopo_ray.checkpoint import load_checkpoint
from sopo_ray.config import Config
from sopo_ray.errors import CheckpointError

REPO = Path(__file__).resolve().parents[1]
CODE_DIRS = ("sopo_ray", "bench", "scripts", "cluster", "tests")


def _python_files() -> list[Path]:
    return sorted(p for d in CODE_DIRS if (REPO / d).is_dir() for p in (REPO / d).rglob("*.py"))


@functools.cache
def _calls(path: Path) -> list[tuple[str, ast.Call]]:
    """Every call in `path` as (dotted callee, node), e.g. ('torch.load', ...), ('np.load', ...)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            parts, func = [], node.func
            while isinstance(func, ast.Attribute):
                parts.append(func.attr)
                func = func.value
            if isinstance(func, ast.Name):
                found.append((".".join([func.id, *reversed(parts)]), node))
    return found


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((kw.value for kw in call.keywords if kw.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def test_the_scan_sees_the_known_loaders():
    """The AST scan below finds torch.load where we know it is (so a broken scan cannot pass silently)."""
    callees = {callee for path in _python_files() for callee, _ in _calls(path)}
    assert "torch.load" in callees and "ray.init" in callees
    files = {path.relative_to(REPO).as_posix() for path in _python_files()
             if any(callee == "torch.load" for callee, _ in _calls(path))}
    assert "sopo_ray/checkpoint.py" in files


def test_every_torch_load_passes_weights_only_true():
    offenders = [f"{path.relative_to(REPO)}:{call.lineno}" for path in _python_files()
                 for callee, call in _calls(path)
                 if callee.split(".")[-1] == "load" and callee.split(".")[0] == "torch"
                 and not _is_true(_keyword(call, "weights_only"))]
    assert not offenders, f"torch.load without weights_only=True at {offenders}"


def test_no_other_unsafe_deserialiser():
    """No pickle/marshal/dill loads, no yaml.load or unsafe_load, no np.load(allow_pickle=True), and nothing
    widens what weights_only accepts (add_safe_globals)."""
    unsafe = {"pickle.load", "pickle.loads", "marshal.load", "marshal.loads", "dill.load", "dill.loads",
              "yaml.load", "yaml.unsafe_load", "yaml.full_load", "torch.serialization.add_safe_globals",
              "torch.serialization.safe_globals"}
    offenders = []
    for path in _python_files():
        for callee, call in _calls(path):
            pickled_npy = callee.endswith(".load") and callee.split(".")[0] in ("np", "numpy") and \
                _is_true(_keyword(call, "allow_pickle"))
            if callee in unsafe or pickled_npy:
                offenders.append(f"{path.relative_to(REPO)}:{call.lineno} {callee}")
    assert not offenders, f"unsafe deserialisation at {offenders}"


class _RunsCodeWhenUnpickled:
    """Unpickling this calls open(marker, 'w'): what a malicious checkpoint would do with os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_malicious_checkpoint_is_refused_without_running_its_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "innocent_looking.pt"
    torch.save({"format": "sopo_ray/1", "kind": "mdm", "state": {"w": torch.zeros(2)},
                "payload": _RunsCodeWhenUnpickled(marker)}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, "mdm")
    assert not marker.exists(), "loading the checkpoint ran code from it"
    message = str(err.value)
    assert "io.open" in message and "weights_only=True" in message and "\n" not in message


def _is_loopback(host: str) -> bool:
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


def test_every_host_setting_defaults_to_loopback():
    """Every config field that names a host to bind (dashboard_host, ...) defaults to a loopback address."""
    cfg = Config()
    sections = {name: type(value) for name, value in cfg if isinstance(value, BaseModel)}
    hosts = {f"{section}.{name}": getattr(getattr(cfg, section), name)
             for section, model in sections.items() for name in model.model_fields if name.endswith("host")}
    assert "cluster.dashboard_host" in hosts
    assert all(_is_loopback(host) for host in hosts.values()), hosts
    assert cfg.cluster.dashboard_host == "127.0.0.1"


def test_every_local_ray_binds_its_dashboard_to_the_config_host_or_has_none():
    """A `ray.init` that starts a Ray (not one joining `address=`) sets dashboard_host or turns the dashboard off."""
    offenders = []
    for path in _python_files():
        for callee, call in _calls(path):
            if callee != "ray.init":
                continue
            address = _keyword(call, "address")
            joins = address is not None and not (isinstance(address, ast.Constant) and address.value == "local")
            no_dashboard = isinstance(_keyword(call, "include_dashboard"), ast.Constant) and \
                _keyword(call, "include_dashboard").value is False
            if not (joins or no_dashboard or _keyword(call, "dashboard_host") is not None):
                offenders.append(f"{path.relative_to(REPO)}:{call.lineno}")
    assert not offenders, f"ray.init starting a dashboard on Ray's default host at {offenders}"


def test_no_server_binds_all_interfaces():
    """No code, cluster file or Dockerfile binds 0.0.0.0 (the dashboard is reached through an SSH tunnel)."""
    files = [*_python_files(), *(REPO / "cluster").rglob("*.yaml"), *(REPO / "docker").rglob("Dockerfile*")]
    offenders = [str(p.relative_to(REPO)) for p in files
                 if p.is_file() and "0.0.0.0" in p.read_text() and p.name != Path(__file__).name
                 and p.name != "test_cluster_config.py"]
    assert not offenders, f"0.0.0.0 in {offenders}"
