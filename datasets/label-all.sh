#!/usr/bin/env bash
# Label the shipped datasets. Every step is resumable, so rerun the same lines in every session:
#   nohup nice -n 5 bash datasets/label-all.sh ws2/train:12 ws2/train:1000 > label-a.log 2>&1 &
#   nohup nice -n 5 bash datasets/label-all.sh ws2/test:6 w-bcc/test:8 w-bcc/train:12 \
#       ws2/test:1000 w-bcc/test:1000 w-bcc/train:1000 > label-b.log 2>&1 &
# A step NAME/SPLIT:COUNT labels datasets/NAME/SPLIT.extxyz until COUNT rows of SPLIT.db are finished;
# NAME/SPLIT:COUNT:reverse works from the end of the file, so two chains can share one split.
# Two chains never write the same database at the same time; one MPI rank each: on a 2-core machine
# two MPI ranks spin-wait for each other and run several times slower than one.
# Staged so that the quick studies can run early: a first part of each set, then the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
(($#)) || { echo "usage: label-all.sh NAME/SPLIT:COUNT ...  (e.g. ws2/train:12 w-bcc/test:1000)" >&2; exit 2; }
mx=.venv/bin/mlip-exafs
export OMP_WAIT_POLICY=PASSIVE
source datasets/lib.sh  # finished
for step in "$@"; do
  name=${step%%/*}; rest=${step#*/}; split=${rest%%:*}; want=${rest#*:}; order=()
  [[ $want == *:reverse ]] && { want=${want%:reverse}; order=(--reverse); }
  dir=datasets/$name
  [[ -f $dir/$split.extxyz ]] || $mx sample --config "$dir/sample-$split.yaml" --out "$dir/$split.extxyz" --threads 1
  have=$(finished "$dir/$split.db")
  ((have < want)) || continue
  $mx label "$dir/$split.extxyz" --db "$dir/$split.db" --config "$dir/cp2k.yaml" --mpi-ranks 1 --limit $((want - have)) "${order[@]}"
done
