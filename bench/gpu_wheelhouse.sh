#!/usr/bin/env bash
# The offline wheelhouse for a GPU machine without network access (bench/gpu_run.sh installs it).
#
#   bench/gpu_wheelhouse.sh [DIR]      # default DIR: the repository root
#
# Downloads, for CPython 3.12 on manylinux x86_64, the wheels a typical CUDA image (Python 3.12,
# torch, torchvision, numpy, pandas, pyarrow, scikit-learn, scipy, tensorboard, matplotlib, rich,
# click, pyyaml, pillow, psutil) lacks to run hpa-tune, plus hpa-tune itself as a wheel, pinned to
# the versions the test suite ran with. The device machine takes at most 64 MiB per call, and
# ray's wheel alone is ~79 MB, so the result is two folders of under 60 MiB each:
#   DIR/.whl1/  the first half of ray's wheel (ray-….whl.part-aa)
#   DIR/.whl2/  the second half (ray-….whl.part-ab) and every other wheel
# gpu_run.sh joins the halves with cat (and checks the sha256 in .whl2/SHA256SUMS) before
# installing. Every wheel's Requires-Dist is checked, recursively, against the wheelhouse and the
# image's packages: a requirement neither covers fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.}
PY=${PYTHON:-python3}
ALL=$(mktemp -d)
trap 'rm -rf "$ALL"' EXIT

# name==version: what the image lacks (the recursive closure of hpa-tune's requirements minus the
# image's packages); versions as in the tested environment (pip freeze of the dev virtualenv).
PINS=(
  ray==2.60.0 msgpack==1.2.4 requests==2.34.2 urllib3==2.8.0 idna==3.21
  charset-normalizer==3.5.3 certifi==2026.10.19.post1
  optuna==5.0.0 alembic==1.20.1 SQLAlchemy==2.1.9 Mako==1.4.3 colorlog==6.12.0 tqdm==4.70.1
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  typing-extensions==4.16.0
  jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
  attrs==26.1.0
  tensorboardX==2.6.5 iterative-stratification==0.1.9 fsspec==2026.9.0 filelock==4.3.2
  nvidia-ml-py==13.615.71
)
# What a typical CUDA image already has (with the packages torch and tensorboard bring).
IMAGE="torch torchvision numpy pandas pyarrow scikit-learn scipy tensorboard matplotlib rich click
pyyaml pillow psutil protobuf packaging markupsafe jinja2 sympy networkx six python-dateutil
triton joblib threadpoolctl grpcio absl-py markdown werkzeug tensorboard-data-server pygments
markdown-it-py mdurl contourpy cycler fonttools kiwisolver pyparsing tzdata setuptools"

for pin in "${PINS[@]}"; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$ALL" "$pin"
done
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$ALL" . 2>/dev/null \
  || "$PY" -m pip wheel -q --no-deps -w "$ALL" .

# Every requirement of every wheel (for Python 3.12 on Linux, the extras hpa-tune asks for: ray's
# "tune") must be in the wheelhouse or the image.
"$PY" - "$ALL" "$IMAGE" <<'EOF'
import re, sys, zipfile
from pathlib import Path
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as canon

folder, image = Path(sys.argv[1]), {canon(n) for n in sys.argv[2].split()}
have = {canon(w.name.split("-")[0]): w for w in folder.glob("*.whl")}
env = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
       "implementation_name": "cpython", "platform_python_implementation": "CPython"}
extras = {"ray": {"tune"}}
missing = []
for name, wheel in sorted(have.items()):
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA")))
    for line in meta.decode().splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        wanted = [""] + sorted(extras.get(name, ()))
        if req.marker and not any(req.marker.evaluate({**env, "extra": e}) for e in wanted):
            continue
        dep = canon(req.name)
        if dep not in have and dep not in image:
            missing.append(f"{wheel.name}: Requires-Dist {req}")
print(f"wheelhouse: {len(have)} wheels; every Requires-Dist is in it or in the image"
      if not missing else "\n".join(["missing from the wheelhouse:", *missing]))
sys.exit(1 if missing else 0)
EOF

rm -rf "$DIR/.whl1" "$DIR/.whl2"
mkdir -p "$DIR/.whl1" "$DIR/.whl2"
RAY=$(basename "$(ls "$ALL"/ray-*.whl)")
(cd "$ALL" && sha256sum "$RAY" > SHA256SUMS && split -n 2 -d "$RAY" "$RAY.part-" && rm "$RAY")
mv "$ALL/$RAY.part-00" "$DIR/.whl1/"
mv "$ALL"/* "$DIR/.whl2/"
du -sh "$DIR/.whl1" "$DIR/.whl2"
