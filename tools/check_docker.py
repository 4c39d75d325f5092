#!/usr/bin/env python3
"""Static checks of Dockerfile and docker-compose.yml (no Docker engine on the dev machines).

Checks what can be checked without building: the compose file parses; every service that builds
names a Dockerfile stage that exists; there is an `elasticsearch` and an `opensearch` profile, each
with its engine and a sidecar pointed at it; every sidecar serves a model that the repository's
mounted folders hold (models/ after scripts/setup) and its pipelines exist; the GPU service is
behind the `gpu` profile with an NVIDIA device reservation and CUDA first with require_gpu; the ONNX
Runtime version and hashes in the Dockerfile match scripts/lib.sh; every COPY source exists in the
repository. Exit 1 with a message per problem.
"""
import re
import sys
from pathlib import Path

import yaml

root = Path(__file__).resolve().parents[1]
problems = []
dockerfile = (root / "Dockerfile").read_text()
stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile, re.M))
compose = yaml.safe_load((root / "docker-compose.yml").read_text())

for name, svc in compose.get("services", {}).items():
    build = svc.get("build")
    if build:
        target = build.get("target")
        if target not in stages:
            problems.append(f"service {name}: build target {target!r} is not a Dockerfile stage ({sorted(stages)})")
gpu = compose["services"].get("sidecar-gpu", {})
if gpu.get("profiles") != ["gpu"]:
    problems.append("sidecar-gpu must be behind the 'gpu' profile")
devices = gpu.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
if not any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices):
    problems.append("sidecar-gpu must reserve an NVIDIA GPU")

services = compose.get("services", {})
for profile, engine in (("elasticsearch", "elasticsearch"), ("opensearch", "opensearch")):
    if profile not in services.get(engine, {}).get("profiles", []):
        problems.append(f"the {engine} service must be in the {profile!r} profile")
    sidecars = [n for n, s in services.items() if n.startswith("sidecar") and profile in s.get("profiles", [])]
    if not any(f"http://{engine}:9200" in str(services[n].get("environment", {}).get("SIDECAR__ENGINE__URLS")) for n in sidecars):
        problems.append(f"no sidecar in the {profile!r} profile points at {engine}")
for name, svc in services.items():
    if not name.startswith("sidecar"):
        continue
    env = svc.get("environment", {})
    mounts = {v.split(":")[1]: v.split(":")[0] for v in svc.get("volumes", [])}
    model = env.get("SIDECAR__ENCODER__MODELS")
    if not model:
        problems.append(f"service {name}: SIDECAR__ENCODER__MODELS is not set, so it serves no model")
    for path in [model or ""] + str(env.get("SIDECAR__INGEST__PIPELINES", "")).split(","):
        if not path:
            continue
        mount = next((m for m in mounts if path.startswith(m + "/")), None)
        if mount is None:
            problems.append(f"service {name}: {path} is not under a mounted folder")
        elif not (root / mounts[mount].lstrip("./") / path[len(mount) + 1:]).parent.exists():
            problems.append(f"service {name}: {path} maps to a folder the repository does not have")
    ports = [str(p) for p in svc.get("ports", [])]
    anonymous = str(env.get("SIDECAR__SERVER__ALLOW_ANONYMOUS", "")).lower() == "true"
    if "0.0.0.0" in str(env.get("SIDECAR__SERVER__LISTEN", "")) and not env.get("SIDECAR__SERVER__API_KEYS"):
        if not anonymous:
            problems.append(f"service {name}: listens on 0.0.0.0 without API keys, so the sidecar refuses to start")
        elif any(not p.startswith("127.0.0.1:") for p in ports):
            problems.append(f"service {name}: anonymous, but publishes {ports} beyond the host's loopback")
gpu_env = services.get("sidecar-gpu", {}).get("environment", {})
if not str(gpu_env.get("SIDECAR__ENCODER__EXECUTION_PROVIDERS", "")).startswith("cuda"):
    problems.append("sidecar-gpu must try the CUDA execution provider first")
if str(gpu_env.get("SIDECAR__ENCODER__REQUIRE_GPU", "")).lower() != "true":
    problems.append("sidecar-gpu must require the GPU (encoder.require_gpu)")

lib = (root / "scripts/lib.sh").read_text()
for key in ("ORT_VERSION", "ORT_WHEEL_SHA256", "ORT_LIB_SHA256"):
    want = re.search(rf'^{key}="([^"]+)"', lib, re.M)
    got = re.search(rf"^ARG {key}=(\S+)", dockerfile, re.M)
    if not want or not got or want.group(1) != got.group(1):
        problems.append(f"{key} differs between scripts/lib.sh and Dockerfile")

for src in re.findall(r"^COPY\s+(?!--from)(.+?)\s+\S+$", dockerfile, re.M):
    for part in src.split():
        if not (root / part).exists():
            problems.append(f"COPY source {part} does not exist")

for p in problems:
    print(f"check_docker: {p}", file=sys.stderr)
print(f"check_docker: {len(stages)} stages, {len(compose['services'])} services, {len(problems)} problems")
sys.exit(1 if problems else 0)
