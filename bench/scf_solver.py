"""Relabel one finished row of a CP2K database with another solver-only setting: SCF steps, wall time, label change.

A solver-only setting (``cp2k.SOLVER_ONLY``, e.g. Broyden's NBUFFER) may change the path to ``eps_scf`` but not
the label; this is how the MoS2 labels' NBUFFER was chosen (docs/datasets.md):

    OMP_NUM_THREADS=1 .venv/bin/python bench/scf_solver.py datasets/mos2/train.db --row 18 \\
        --config datasets/mos2/cp2k.yaml --nbuffer 12

One MPI rank; prints one JSON line. Pause other CP2K runs for a fair wall time (the steps do not depend on load).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from ase.db import connect

from mlip_exafs.cp2k import Cp2kSettings
from mlip_exafs.label import Cp2kSession


def relabel(db_path: Path, row_id: int, config: Path, nbuffer: int) -> dict:
    row = connect(db_path).get(id=row_id)
    atoms = row.toatoms()
    atoms.info["uid"] = row.uid
    settings = Cp2kSettings.model_validate({**yaml.safe_load(config.read_text()), "broyden_nbuffer": nbuffer})
    start = time.perf_counter()
    with Cp2kSession(settings, 1) as session, tempfile.TemporaryDirectory() as keep:
        label = session.evaluate(atoms, Path(keep))
    return {"row": row_id, "uid": row.uid, "ref_nbuffer": row.get("broyden_nbuffer", 4), "ref_scf_steps": row.get("scf_steps"),
            "ref_wall_s": row.get("wall_time_s"), "nbuffer": nbuffer, "scf_steps": label.scf_steps, "converged": label.scf_converged,
            "wall_s": time.perf_counter() - start, "delta_energy_ev": label.energy_ev - row.energy,
            "max_delta_force_ev_a": float(np.abs(label.forces_ev_a - row.forces).max()),
            "max_delta_stress_ev_a3": float(np.abs(label.stress_ev_a3 - row.stress).max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", type=Path)
    parser.add_argument("--row", type=int, required=True, help="database row id")
    parser.add_argument("--config", type=Path, required=True, help="the CP2K settings YAML that labelled the database")
    parser.add_argument("--nbuffer", type=int, required=True, help="Broyden mixing history (CP2K &MIXING NBUFFER)")
    args = parser.parse_args()
    print(json.dumps(relabel(args.db, args.row, args.config, args.nbuffer)))


if __name__ == "__main__":
    main()
