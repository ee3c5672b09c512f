#!/usr/bin/env bash
# Label every shipped dataset, in order of need; each step is resumable, so rerun this in every session:
#   nohup nice -n 5 bash datasets/label-all.sh > label.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
mx=.venv/bin/mlip-exafs
for name in ws2 w-bcc; do
  for split in test train; do
    [[ -f datasets/$name/$split.extxyz ]] || $mx sample --config datasets/$name/sample-$split.yaml --out datasets/$name/$split.extxyz --threads 1
  done
done
for job in ws2/test ws2/train w-bcc/test w-bcc/train; do
  name=${job%/*}; split=${job#*/}
  $mx label datasets/$name/$split.extxyz --db datasets/$name/$split.db --config datasets/$name/cp2k.yaml
done
