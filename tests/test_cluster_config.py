"""Cluster launcher YAMLs, docker files and job uploads, checked offline against what Ray and pyproject expect."""

from __future__ import annotations

import copy
import json
import re
import shlex
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from sopo_ray.config import load_config
from sopo_ray.distributed.cluster import job_runtime_env

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAMLS = sorted((REPO / "cluster").glob("*.yaml"))
RUN_CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def _prepared(path: Path) -> dict:
    return prepare_config(yaml.safe_load(path.read_text()))


def _node_type_problems(config: dict) -> list[str]:
    """What Ray's own validation misses: a node type whose min_workers exceeds its max_workers."""
    problems = []
    for name, node_type in config["available_node_types"].items():
        low, high = node_type.get("min_workers", 0), node_type.get("max_workers", config["max_workers"])
        if low > high:
            problems.append(f"{name}: min_workers {low} > max_workers {high}")
    return problems


def _start_flag_resources(commands: list[str]) -> set[str]:
    """Custom resources given as `ray start --resources='{...}'` (on-prem clusters set them this way)."""
    found: set[str] = set()
    for command in commands:
        tokens = shlex.split(command)
        for i, token in enumerate(tokens):
            value = None
            if token.startswith("--resources="):
                value = token.split("=", 1)[1]
            elif token == "--resources" and i + 1 < len(tokens):
                value = tokens[i + 1]
            if value:
                found.update(json.loads(value))
    return found


def _advertised_resources(config: dict) -> set[str]:
    names = {key for t in config["available_node_types"].values() for key in t.get("resources", {})}
    return names | _start_flag_resources(config.get("worker_start_ray_commands", []))


def test_cluster_yamls_exist():
    assert {p.name for p in CLUSTER_YAMLS} >= {"gpu.yaml", "local.yaml"}


@pytest.mark.parametrize("path", CLUSTER_YAMLS, ids=lambda p: p.name)
def test_cluster_yaml_validates_against_ray_schema(path: Path):
    config = _prepared(path)
    validate_config(config)
    assert _node_type_problems(config) == []
    total_min = sum(t.get("min_workers", 0) for t in config["available_node_types"].values())
    assert total_min <= config["max_workers"]


def test_schema_and_extra_checks_catch_broken_yaml():
    """The checks above are live: a misspelt key, and a node type with min > max, are refused."""
    raw = yaml.safe_load((REPO / "cluster" / "gpu.yaml").read_text())
    typo = copy.deepcopy(raw)
    typo["max_worker"] = typo.pop("max_workers")
    with pytest.raises(Exception, match="max_worker"):
        validate_config(prepare_config(typo))
    inverted = copy.deepcopy(raw)
    inverted["available_node_types"]["gpu_rollout"].update(min_workers=9, max_workers=2)
    assert _node_type_problems(prepare_config(inverted)) == ["gpu_rollout: min_workers 9 > max_workers 2"]


def test_gpu_yaml_has_head_learner_and_rollout_node_types():
    config = _prepared(REPO / "cluster" / "gpu.yaml")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "the head must not host learners or rollout actors"
    learner_types = [t for t in types.values() if "learner" in t["resources"]]
    rollout_types = [t for t in types.values() if "rollout" in t["resources"]]
    assert learner_types and all(t["min_workers"] >= 1 for t in learner_types)
    assert len(rollout_types) >= 2 and any(t["max_workers"] > t["min_workers"] for t in rollout_types)
    assert config["docker"]["image"]


@pytest.mark.parametrize("path", CLUSTER_YAMLS, ids=lambda p: p.name)
def test_every_custom_resource_a_config_asks_for_is_advertised(path: Path):
    advertised = _advertised_resources(_prepared(path))
    asked = set()
    for run_config in RUN_CONFIGS:
        cluster = load_config(run_config).cluster
        asked |= {r for r in (cluster.rollout_resource, cluster.learner_resource) if r}
    assert asked, "the GPU configs should place actors with custom resources"
    assert asked <= advertised, f"{path.name} lacks {sorted(asked - advertised)}"


@pytest.mark.parametrize("path", CLUSTER_YAMLS, ids=lambda p: p.name)
def test_cluster_keeps_dashboard_on_loopback_and_token_auth_on(path: Path):
    config = _prepared(path)
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in path.read_text()
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in command:
            assert "RAY_AUTH_MODE=token" in command
    assert "~/.ray/auth_token" in config["file_mounts"]


def test_paper_configs_hold_the_paper_settings():
    mdm = load_config(REPO / "configs" / "humanml3d_mdm.yaml")
    mld = load_config(REPO / "configs" / "humanml3d_mld.yaml")
    assert (mdm.model.num_layers, mdm.model.latent_dim, mdm.model.num_heads) == (8, 512, 4)
    assert (mdm.objective.k, mld.objective.k) == (4, 2)
    for cfg in (mdm, mld):
        assert cfg.data.source == "humanml3d"
        assert (cfg.objective.tau, cfg.objective.beta, cfg.objective.beta_w_c) == (0.45, 1.0, 2.0)
        assert (cfg.optimizer.lr, cfg.schedule.batch_size, cfg.diffusion.sample_steps) == (1e-5, 64, 50)
        assert cfg.cluster.use_gpu is True
    assert mdm.diffusion.guidance_scale == 2.5


def _pins() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for dep in deps:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^\s;]+)", dep.strip())
        if match:
            pins[match.group(1).lower()] = match.group(3)
    return pins


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cpu"])
def test_dockerfiles_match_pyproject_pins(name: str):
    text = (REPO / "docker" / name).read_text()
    pins = _pins()
    assert {"torch", "ray"} <= set(pins)
    assert f"ARG TORCH_VERSION={pins['torch']}" in text
    assert re.search(r'pip install "torch==\$\{TORCH_VERSION\}" --index-url \S+/whl/' +
                     ("cpu" if name.endswith(".cpu") else r"\$\{TORCH_CUDA\}"), text)
    ray_pins = set(re.findall(r"ray\[[^\]]*\]==([0-9.]+)", text))
    assert ray_pins == {pins["ray"]}
    assert "pip install ." in text
    for source in re.findall(r"^COPY (.+) \S+$", text, flags=re.MULTILINE):
        for item in source.split():
            assert (REPO / item).exists(), f"{name} copies {item}, which is missing"


def test_dockerignore_keeps_environments_data_and_outputs_out():
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "artifacts", "runs", "data"} <= ignored


def test_job_upload_excludes_data_and_outputs(tmp_path: Path):
    """Package a project tree the way `ray job submit --working-dir` does, with our excludes and no .gitignore."""
    from ray._private.runtime_env.packaging import create_package

    project = tmp_path / "project"
    files = {
        "sopo_ray/run.py": "code", "sopo_ray/data/dataset.py": "code", "configs/default.yaml": "name: x",
        "pyproject.toml": "",
        "artifacts/base/model.pt": "w", "runs/r1/ckpt.pt": "w", "data/HumanML3D/new_joint_vecs/000001.npy": "m",
        ".venv/bin/python": "", ".git/HEAD": "", "sopo_ray/__pycache__/run.cpython-311.pyc": "",
    }
    for rel, content in files.items():
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(content)
    env = job_runtime_env()
    archive = tmp_path / "pkg.zip"
    create_package(str(project), archive, include_gitignore=False, excludes=env["excludes"])
    names = {n for n in zipfile.ZipFile(archive).namelist() if not n.endswith("/")}
    assert names == {"sopo_ray/run.py", "sopo_ray/data/dataset.py", "configs/default.yaml", "pyproject.toml"}
    assert env["env_vars"]["HF_HUB_OFFLINE"] == "1"
