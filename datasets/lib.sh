# Shell helpers of datasets/label-all.sh and datasets/after-labels.sh (sourced; run from the repository root).
py=.venv/bin/python
finished() {  # finished DB -> number of finished rows
  $py -c "import sys, pathlib; from mlip_exafs.label import finished_uids; print(len(finished_uids(pathlib.Path(sys.argv[1]))))" "$1"
}
