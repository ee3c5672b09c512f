"""The exafs stage: configuration-averaged χ(k) of MD snapshots (re-exports only).

The stage is :mod:`mlip_exafs.exafs.stage`; its engines are ``fast.py`` (path-length
histograms) and ``persnapshot.py`` (FEFF8L per snapshot), both fed by ``paths.py``
and ``feff.py``; the experiment's shell fit is ``fit.py``. The trajectory geometry
it shares with the analysis stage is :mod:`mlip_exafs.geometry`, its figures
:mod:`mlip_exafs.plots`.
"""

from mlip_exafs.exafs.stage import (
    AveragedChi,
    ExafsSettings,
    FTWindowSettings,
    OutFiles,
    cached_potentials,
    choose_rmax,
    exafs_record,
    read_chi_csv,
    read_result,
    run_exafs,
    theory_absorber_edge,
)
from mlip_exafs.plots import plot_models

__all__ = ["AveragedChi", "ExafsSettings", "FTWindowSettings", "OutFiles", "cached_potentials", "choose_rmax", "exafs_record", "plot_models",
           "read_chi_csv", "read_result", "run_exafs", "theory_absorber_edge"]
