# Source this on the GPU machine from the repository root: installs the wheels carried in .whl/
# and meshforge's packages into /tmp/site (the machine cannot reach a package index), points
# the tests at the carried data, and builds nvdiffrast's CUDA plugin once.
export PYTHONUNBUFFERED=1 NUMBA_CACHE_DIR=/tmp/numba-cache MESHFORGE_SHARED="$PWD/.device-data"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
# the service's wheels (.whl-svc) are carried only for multigpu_bench.py
svc=""; [ -d .whl-svc ] && svc="./service $(ls .whl-svc/*.whl)"
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade --target /tmp/site \
    ./core ./plugins/nvdiffrec ./plugins/metrics ./plugins/reconviagen $svc 2>&1 | grep -v "^WARNING" | tail -2
export PYTHONPATH=/tmp/site
python3 - <<'PY'
import time, torch, numpy, numba
print(f"torch {torch.__version__} cuda {torch.version.cuda} gpu {torch.cuda.get_device_name(0)} numpy {numpy.__version__} numba {numba.__version__}")
t = time.time()
from meshforge_nvdiffrec.backends import load_nvdiffrast
load_nvdiffrast()
print(f"nvdiffrast plugin ready in {time.time() - t:.1f} s")
PY
