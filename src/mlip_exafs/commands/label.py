"""CLI verbs for sampling and labelling: ``sample``, ``label``, ``import``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mlip_exafs.cli import app, console, default_text, given
from mlip_exafs.config import check_numbers, load_yaml_model, validate_model
from mlip_exafs.errors import UserError
from mlip_exafs.progress import progress_bar
from mlip_exafs.settings import SampleSpec


@app.command("sample")
def sample_cmd(
    out: Path = typer.Option(..., "--out", help="extxyz file to write."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML with SampleSpec fields."),
    structure: Optional[str] = typer.Option(None, help=f"Override the structure; {default_text(SampleSpec, 'structure')}."),
    supercell: Optional[str] = typer.Option(None, help=f"Override the supercell, e.g. 3x3x1; {default_text(SampleSpec, 'supercell')}."),
    seed: Optional[int] = typer.Option(None, help=f"Override the seed; {default_text(SampleSpec, 'seed')}."),
    threads: Optional[int] = typer.Option(None, help="Torch threads (default: $MLIP_EXAFS_THREADS, else all cores)."),
) -> None:
    """Sample MD snapshots, strained and rattled cells to label (deterministic for a seed)."""
    from mlip_exafs.sample import sample  # lazy: only when this verb runs (--help: 1.3 s, not 5)

    spec = load_yaml_model(SampleSpec, config) if config else SampleSpec()
    overrides = {k: v for k, v in dict(structure=structure, supercell=supercell, seed=seed, threads=threads).items() if v is not None}
    spec = validate_model(SampleSpec, {**spec.model_dump(exclude_unset=True), **overrides}, "mlip-exafs sample")  # model_copy would skip the checks
    n_md = spec.total() - spec.rattled
    with progress_bar("sampling MD snapshots", n_md) as advance:
        frames = sample(spec, out, progress=advance)
    console.print(f"wrote {len(frames)} structures to {out}")


# Defaults of the stage functions, for --help only: an option left out is not passed, so the function's own default applies
# (importing label.py/importers.py for the help would cost seconds; tests/test_cli.py checks that these agree with the functions).
LABEL_MPI_RANKS = 2  # label.label_structures(mpi_ranks=)
IMPORT_FORMAT = "auto"  # importers.import_files(fmt=)
IMPORT_STRESS_UNITS = "ev/a3"  # importers.import_files(stress_units=)


@app.command("label")
def label_cmd(
    structures: Path = typer.Argument(..., help="extxyz file of structures (from 'mlip-exafs sample')."),
    db: Path = typer.Option(..., "--db", help="ASE SQLite database to add labels to (created if missing)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML with CP2K settings (Cp2kSettings fields)."),
    mpi_ranks: Optional[int] = typer.Option(None, "--mpi-ranks", min=1, help=f"MPI ranks for CP2K; default {LABEL_MPI_RANKS}."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Label at most this many new structures."),
    reverse: bool = typer.Option(False, "--reverse", help="Start from the end of the file: a second labeller on the same file and --db."),
) -> None:
    """Label structures with CP2K; resumable (finished rows are skipped)."""
    from mlip_exafs.cp2k import Cp2kSettings, cp2k_executable  # lazy: only when this verb runs (--help: 1.3 s, not 5)
    from mlip_exafs.label import finished_uids, label_structures, read_structures  # lazy: only when this verb runs (--help: 1.3 s, not 5)

    check_numbers({"mpi_ranks": mpi_ranks, "limit": limit}, "mlip-exafs label")
    settings = load_yaml_model(Cp2kSettings, config) if config else Cp2kSettings()
    cp2k_executable()
    uids = {a.info["uid"] for a in read_structures(structures)}
    n_done = len(uids & finished_uids(db))
    n_todo = min(len(uids) - n_done, limit) if limit else len(uids) - n_done
    with progress_bar(f"CP2K labelling → {db}", n_done + n_todo, done_before=n_done) as advance:  # a resumed run counts from where it is
        result = label_structures(structures, db, settings, limit=limit, on_progress=lambda i, n, t: advance(), reverse=reverse, **given(mpi_ranks=mpi_ranks))
    secs = result["seconds"]
    mean = f", {sum(secs) / len(secs):.0f} s per structure" if secs else ""
    console.print(f"labelled {result['labelled']} new, {result['already_done']} already done, of {result['total']}{mean}")


@app.command("import")
def import_cmd(
    files: list[Path] = typer.Argument(..., help="VASP OUTCAR / vasprun.xml or extxyz files with energies and forces."),
    db: Path = typer.Option(..., "--db", help="ASE SQLite database to add the labels to (e.g. mydata/train.db)."),
    fmt: Optional[str] = typer.Option(None, "--format", help=f"auto, outcar, vasprun or extxyz; default {IMPORT_FORMAT}."),
    stress_units: Optional[str] = typer.Option(None, "--stress-units", help="extxyz stress units: ev/a3 (ASE sign), gpa (positive = tensile), kbar-vasp (VASP sign); "
                                               f"default {IMPORT_STRESS_UNITS}."),
) -> None:
    """Import a user's DFT labels, converting units explicitly (VASP kbar and sign → eV/Å³, ASE sign)."""
    from mlip_exafs.importers import import_files  # lazy: only when this verb runs (--help: 1.3 s, not 5)

    stress_units = stress_units.strip().lower() if stress_units is not None else None  # GPa is gpa, as --absorber w is W
    fmt = fmt.strip().lower() if fmt is not None else None
    if stress_units not in (None, "ev/a3", "gpa", "kbar-vasp"):
        raise UserError(f"unknown --stress-units '{stress_units}'; use ev/a3, gpa or kbar-vasp")
    result = import_files(files, db, **given(fmt=fmt, stress_units=stress_units))
    unconverged = f"; {result['not_converged']} of them not SCF-converged: kept for the record, never used" if result["not_converged"] else ""
    console.print(f"imported {result['added']} structures into {db} ({result['skipped']} already there{unconverged})")
