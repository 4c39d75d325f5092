#!/usr/bin/env python3
"""Static checks of Dockerfile and docker-compose.yml (no Docker engine on the dev machines).

Checks what can be checked without building: the compose file parses; every service that builds
names a Dockerfile stage that exists; the GPU service is behind the `gpu` profile with an NVIDIA
device reservation; the ONNX Runtime version and hashes in the Dockerfile match scripts/lib.sh;
every COPY source exists in the repository. Exit 1 with a message per problem.
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
