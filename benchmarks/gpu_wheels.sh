#!/usr/bin/env bash
# Build the wheelhouse that benchmarks/gpu.py needs on the GPU machine lent to a session.
#
# That machine has no network.  Its image holds torch (CUDA), JAX with its CUDA plugin, NumPyro,
# scikit-learn, SciPy, h5py, pandas, xarray, matplotlib, pytest and hypothesis, but not Pyro or
# ArviZ (the device tool's notes on its machine kinds list its packages).  This script downloads, from the pip
# index this machine is configured with, the wheels of what is missing, in the versions installed
# here (the versions this checkout's tests ran with), for that machine's CPython 3.12 on x86-64:
#
#     benchmarks/gpu_wheels.sh            # into .wheels/ (ignored by git), prints its size
#     benchmarks/gpu_wheels.sh DIR        # into DIR
#
# NumPyro and JAX are not carried: the machine's own JAX has the CUDA plugin, and a CPU jaxlib put
# before it on PYTHONPATH would hide it (jaxlib alone is also larger than a run's 64 MiB carry).
# docs/benchmarks.md ("GPU") gives the device command that installs the wheels and runs gpu.py.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-.wheels}"
python="${PYTHON:-python3}"
limit=$((64 * 1024 * 1024))

packages=(pyro-ppl pyro-api arviz xarray-einstats h5netcdf platformdirs)
pins=()
for name in "${packages[@]}"; do
    version="$("$python" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$name" 2>/dev/null || true)"
    pins+=("${name}${version:+==${version}}")
done

rm -rf "$dest"
mkdir -p "$dest"
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$dest" "${pins[@]}"

size="$(du -sb "$dest" | cut -f1)"
ls -1 "$dest"
echo "$dest: $(ls "$dest" | wc -l) wheels, $size bytes ($((size / 1024)) KiB) of the ${limit}-byte carry limit"
if [ "$size" -ge "$limit" ]; then
    echo "$dest is larger than a run may carry" >&2
    exit 1
fi
