#!/usr/bin/env bash
# The device check for a session lent a GPU machine (one call, ~6 min): the potentials and the fine-tune on CUDA
# against the same machine's CPU (bench/gpu.py), then the md stage end to end on CUDA. Run from the repository root
# through the device tool, carrying the packages that machine lacks (it has torch, not ASE, CHGNet or SevenNet):
#   .whl/  wheels for Python 3.12 (ase chgnet pymatgen pymatgen-core monty ruamel.yaml spglib uncertainties palettable
#          orjson pydantic pydantic-core annotated-types typing-inspection braceexpand matscipy dill), fetched here with
#          `pip download --no-deps --only-binary=:all: --python-version 3.12 ...` (see the device tool's README);
#   .gpu/site/  sevenn (pure Python, only the SevenNet-0 11Jul2024 checkpoint: the wheel with all five is over the
#          64 MiB a call may carry), its dist-info, and nvidia_smi.py (CHGNet imports it; sdist only, no wheel).
# Results land in $OUT (device tool) or ./gpu-out: gpu-<model>.csv, md-cuda-<model>.json, and the log.
# `bash bench/gpu_device.sh md` runs the md part alone (~1 min after the install).
set -uo pipefail
part=${1:-all}
out=${OUT:-gpu-out}; mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD/src:$PWD/.gpu/site:/tmp/site PYTHONUNBUFFERED=1 MLIP_EXAFS_CACHE=/tmp/mlx-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.get_num_threads(), 'threads')"
for model in chgnet sevennet-0; do
  [[ $part == md ]] && break
  python3 bench/gpu.py --models "$model" --out "/tmp/gpu-$model" && cp "/tmp/gpu-$model/gpu.csv" "$out/gpu-$model.csv" || echo "FAILED: bench/gpu.py $model"
done
for model in chgnet sevennet-0; do
  /usr/bin/time -f "md $model cuda: %e s wall" python3 -m mlip_exafs md ws2 --supercell 6x6x2 --potential "$model" --device cuda \
      --equilibrate 100fs --production 400fs --every 40fs --out "/tmp/md-$model" && cp "/tmp/md-$model/md.json" "$out/md-cuda-$model.json" \
      || echo "FAILED: md $model on cuda"
done
