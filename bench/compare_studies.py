"""Markdown tables that set finished studies side by side (e.g. WS2 against MoS2): the numbers a closing note or a
paper's table needs, read as the study's report reads them (``report.load_view``: its summary, and each MD's σ²
block errors from its analysis).

    python bench/compare_studies.py studies/ws2-paper studies/mos2-paper

Prints, per study, the pretrained potentials' validation and σ² per shell, the learning curve (mean ± std over seeds
per N), the fine-tuned models' σ² per shell and the recommended N; then one table of force MAE and softening slope per
N with a column per study. Studies are compared as they are: shells keep their own labels (W–S1, Mo–S1).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mlip_exafs.report import StudyView, load_view


def _pm(row: dict, key: str, digits: int) -> str:
    mean, std = row.get(f"{key}_mean"), row.get(f"{key}_std")
    if mean is None:
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if row.get("n_seeds", 1) > 1 else f"{mean:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _sigma2(view: StudyView, name: str, shell: str) -> str:
    msrd = view.summary["potentials"][name]["msrd"]
    if shell not in msrd:
        return "–"
    err = view.sigma2_err(name, shell)
    return f"{msrd[shell]['sigma2']:.5f}" + (f" ± {err:.5f}" if err is not None else "")


def _sigma2_rows(view: StudyView) -> tuple[list[str], list[list[str]]]:
    with_md = [name for name, p in view.summary["potentials"].items() if p.get("msrd")]
    shells = list(view.summary["potentials"][with_md[0]]["msrd"]) if with_md else []
    rows = [[name] + [_sigma2(view, name, s) for s in shells] for name in with_md]
    return [f"σ² {s} (Å²)" for s in shells], rows


def study_section(folder: Path) -> str:
    view = load_view(folder)
    summary = view.summary
    validated = {name: p["validation"] for name, p in summary["potentials"].items() if p.get("validation") and "-ft-" not in name}
    pristine = _table(["pretrained", "slope", "force MAE (eV/Å)", "energy MAE (meV/atom)", "stress MAE (GPa)"],
                      [[name, f"{v['softening_slope']:.3f}", f"{v['force_mae_ev_a']:.3f}", f"{v['energy_mae_mev_atom']:.1f}",
                        f"{v['stress_mae_gpa']:.2f}"] for name, v in validated.items()])
    curve = _table(["N", "seeds", "force MAE (eV/Å)", "slope", "energy MAE (meV/atom)", "stress MAE (GPa)"],
                   [[str(r["n"]), str(r["n_seeds"]), _pm(r, "force_mae_ev_a", 3), _pm(r, "softening_slope", 3),
                     _pm(r, "energy_mae_mev_atom", 1), _pm(r, "stress_mae_gpa", 2)] for r in summary.get("learning_curve_by_n", [])])
    shells, rows = _sigma2_rows(view)
    sigma2 = _table(["potential", *shells], rows) if rows else "(no MD)"
    return "\n\n".join([f"## {folder.name}", pristine, "Learning curve (mean ± std over seeds):", curve,
                        "σ² per shell ± block error (300 K classical MD unless the study says otherwise):", sigma2,
                        f"Recommended N: {summary.get('recommended_n')}"])


def side_by_side(folders: list[Path]) -> str:
    by_study = {f.name: {r["n"]: r for r in load_view(f).summary.get("learning_curve_by_n", [])} for f in folders}
    ns = sorted({n for rows in by_study.values() for n in rows})
    header = ["N"] + [f"{name} {what}" for name in by_study for what in ("force MAE", "slope")]
    rows = [[str(n)] + [cell for rows_ in by_study.values() for cell in
                        ((_pm(rows_[n], "force_mae_ev_a", 3), _pm(rows_[n], "softening_slope", 3)) if n in rows_ else ("–", "–"))]
            for n in ns]
    return "## Side by side\n\n" + _table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", type=Path, help="finished study folders (with summary.json)")
    args = parser.parse_args()
    missing = [str(f) for f in args.studies if not (f / "summary.json").exists()]
    if missing:
        raise SystemExit(f"no summary.json in {', '.join(missing)}: finish those studies first (mlip-exafs study ...)")
    print("\n\n".join([study_section(f) for f in args.studies] + ([side_by_side(args.studies)] if len(args.studies) > 1 else [])))


if __name__ == "__main__":
    main()
