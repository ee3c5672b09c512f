#!/usr/bin/env bash
# Run part of a study on a GPU machine lent through the device tool, and bring its step folders back: the MD that
# takes hours on 2 CPU cores takes minutes there (docs/potentials.md "Devices"). One call, from the repository root:
#   bash bench/gpu_study.sh examples/mos2.yaml paper studies/mos2-paper pristine,md [DATASET_DIR NAME]
# carrying .whl and .gpu, filled as bench/gpu_device.sh's header says plus wheels of typer, rich, xraydb, sqlalchemy
# and platformdirs (the study checks every step's settings first; the EXAFS edge check reads xraydb; 35 MB in all).
# That machine has no larch: a config with an `experiment` block must travel without it (the MD steps' hashes do not
# depend on it). With DATASET_DIR NAME, the shipped dataset NAME is packed from DATASET_DIR first, for a dataset still
# being labelled (carry a copy of its committed databases, since the working tree's may be mid-write): only with a
# `pristine` selection, whose MD does not depend on the labels (a fine-tune would train on the partial copy).
# The study is interrupted after $GPU_STUDY_S seconds (default 470: a call may run 600); an MD stopped there resumes
# from its last checkpoint (every 200 fs) on the next run, here or anywhere. Device and threads are runtime choices,
# not part of a step's identity, so the full study on the CPU machine finds the finished steps cached.
# What comes back: the files the run wrote or changed, as $OUT/study.tgz.aa, .ab, ... (15 MiB parts; a call returns at
# most 64 MiB), without study.json (the device's records the hashes of a partial dataset; the full study here writes
# its own), and $OUT/gpu-study.log. Unpack in the repository root, with no study running on that folder here:
#   cat /work/.device/.../study.tgz.* | tar xzf -
# The tree travels only under 64 MiB: take the other study folders out of the index for the call (docs/development.md).
set -uo pipefail
(($# == 4 || $# == 6)) || { echo "usage: gpu_study.sh CONFIG PROFILE STUDY_DIR ONLY [DATASET_DIR NAME]" >&2; exit 2; }
config=$1 profile=$2 study=$3 only=$4
out=${OUT:-gpu-out}; mkdir -p "$out"
if (($# == 6)) && [[ ,$only, != *,pristine,* ]]; then
  echo "a partial DATASET_DIR only with a pristine selection (e.g. pristine,md): fine-tunes would train on it" >&2; exit 2
fi

run() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
  export PYTHONPATH=$PWD/src:$PWD/.gpu/site:/tmp/site PYTHONUNBUFFERED=1 MLIP_EXAFS_CACHE=/tmp/mlx-cache
  export MLIP_EXAFS_THREADS=${MLIP_EXAFS_THREADS:-8}  # 16 cores: two steps at once, 8 torch threads each
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  if (($# == 6)); then python3 -m mlip_exafs dataset pack "$5" --name "$6" || return 1; fi
  mkdir -p "$study"; touch /tmp/gpu-study.stamp
  local start; start=$(date +%s)
  timeout -s INT "${GPU_STUDY_S:-470}" python3 -m mlip_exafs study "$config" --profile "$profile" --out "$study" --only "$only" \
      --device "${GPU_STUDY_DEVICE:-cuda}"
  echo "study exit $? after $(($(date +%s) - start)) s"
  for log in "$study"/steps/*/step.log; do [[ -f $log ]] && echo "$log: $(tail -n 1 "$log")"; done
  find "$study" -type f -newer /tmp/gpu-study.stamp ! -name '.*.lock' ! -path "$study/study.json" -print0 \
      | tar czf - --null -T - | split -b 15m - "$out/study.tgz."
  local mib; mib=$(du -cm "$out"/study.tgz.* | tail -n 1 | cut -f1)
  ((mib < 64)) || echo "WARNING: $mib MiB of results, over the 64 MiB a call returns: rerun with a narrower --only"
  ls -l "$out"
}
run "$@" 2>&1 | tee "$out/gpu-study.log"
exit "${PIPESTATUS[0]}"
