#!/usr/bin/env bash
# Pack a dataset as soon as its labelling chains are done, then run a study on it, so that the hours between
# the last label and the next working session are not lost:
#   setsid nohup bash datasets/after-labels.sh mos2 100 20 -- \
#       study examples/mos2.yaml --profile paper --out studies/mos2-paper --executor dask >> after-mos2.log 2>&1 &
# It sleeps (no CPU) while a labeller still writes datasets/NAME/{train,test}.db, stops with a message if a split
# has fewer finished rows than asked (the chains were stopped: restart datasets/label-all.sh, then this), packs
# the folder under NAME (`mlip-exafs dataset pack`, which checks the databases) and runs `mlip-exafs COMMAND...`.
# Rerun it as it is in every session: packing again gives the same bytes, and the study resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
(($# >= 4)) && [[ $4 == -- ]] || { echo "usage: after-labels.sh NAME N_TRAIN N_TEST -- MLIP_EXAFS_VERB ARGS..." >&2; exit 2; }
name=$1 n_train=$2 n_test=$3; shift 4
dir=datasets/$name
source datasets/lib.sh  # py, finished
labelling() {  # is a labeller still writing one of the dataset's databases?
  $py -c "import sys, pathlib; from mlip_exafs.label import running_labeller
sys.exit(0 if any(running_labeller(pathlib.Path(p)) for p in sys.argv[1:]) else 1)" "$dir/train.db" "$dir/test.db"
}
while labelling || { sleep 60; labelling; }; do sleep 300; done  # seen idle twice: a chain between two steps holds no lock
for split in train:$n_train test:$n_test; do
  have=$(finished "$dir/${split%:*}.db")
  ((have >= ${split#*:})) || { echo "$(date -u +%FT%TZ) $dir/${split%:*}.db has $have of ${split#*:} rows and no labeller runs: restart datasets/label-all.sh" >&2; exit 1; }
done
echo "$(date -u +%FT%TZ) $dir labelled; packing as '$name'"
.venv/bin/mlip-exafs dataset pack "$dir" --name "$name"
echo "$(date -u +%FT%TZ) running: mlip-exafs $*"
exec env MLIP_EXAFS_THREADS=1 .venv/bin/mlip-exafs "$@"
