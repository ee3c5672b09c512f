#!/usr/bin/env bash
# Label the shipped datasets; every step is resumable, so rerun this in every session:
#   nohup nice -n 5 bash datasets/label-all.sh ws2 > label-ws2.log 2>&1 &
#   nohup nice -n 5 bash datasets/label-all.sh w-bcc > label-w.log 2>&1 &
# One chain per dataset (they never write the same database), one MPI rank each: on a shared
# machine two MPI ranks spin-wait for each other and run several times slower than one.
# Staged so that the quick studies can run early: a first part of each set, then the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: label-all.sh ws2|w-bcc}
mx=.venv/bin/mlip-exafs
export OMP_WAIT_POLICY=PASSIVE
for split in test train; do
  [[ -f datasets/$name/$split.extxyz ]] || $mx sample --config datasets/$name/sample-$split.yaml --out datasets/$name/$split.extxyz --threads 1
done
label() {  # label SPLIT TOTAL_WANTED
  local split=$1 want=$2 have
  have=$(.venv/bin/python -c "from mlip_exafs.label import finished_uids; print(len(finished_uids(__import__('pathlib').Path('datasets/$name/$split.db'))))")
  ((have < want)) || return 0
  $mx label datasets/$name/$split.extxyz --db datasets/$name/$split.db --config datasets/$name/cp2k.yaml --mpi-ranks 1 --limit $((want - have))
}
label test 8
label train 12
label test 1000
label train 1000
