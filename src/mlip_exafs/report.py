"""One self-contained HTML report of a study: every number, every plot, the provenance.

Plots are embedded as base64 PNGs so the file can be mailed or archived alone.
The report is built only from files on disk (``summary.json``, ``study.json``
and the step folders), so ``mlip-exafs report DIR`` can rebuild it any time.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

from mlip_exafs.files import read_json, write_text

SECTIONS = (  # (step-folder prefix, section title)
    ("validate-", "Parity against held-out DFT"),
    ("finetune-", "Fine-tuning curves"),
    ("analyze-", "Structure from MD: RDF, MSRD, bond angles"),
    ("exafs-", "Configuration-averaged EXAFS"),
    ("compare-", "Against experiment"),
)
SEED_SUFFIX = re.compile(r"-s(\d+)$")  # step folders of fine-tuned models end in -s{seed}


def natural(name: str) -> list:
    """Sort key that puts n2 before n10 and n100, as a reader of a learning curve expects."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def write_report(study_dir: Path) -> Path:
    """Build ``report.html`` (and the learning-curve plot) from a finished study folder."""
    summary = read_json(study_dir / "summary.json")
    record = read_json(study_dir / "study.json")
    curve_png = study_dir / "learning_curve.png"
    if summary["learning_curve"]:
        plot_learning_curve(summary, curve_png)
    parts = [_head(summary["study"]), _overview(summary, record)]
    if curve_png.exists() and summary["learning_curve"]:
        parts.append(_section("Learning curve", _img(curve_png, "learning curve", wide=True)))
    parts.append(_section("Validation against DFT", _validation_table(summary) + _group_table(study_dir / "steps")))
    msrd = _msrd_table(summary, study_dir / "steps")
    if msrd:
        parts.append(_section("Mean-square relative displacements", msrd))
    exafs = _exafs_table(summary)
    if exafs:
        parts.append(_section("EXAFS agreement", exafs))
    for prefix, title in SECTIONS:
        gallery = _gallery(study_dir / "steps", prefix)
        if prefix == "exafs-":
            gallery = _exafs_overlay(study_dir) + gallery
        if prefix == "compare-":
            gallery = _experiment_overlay(study_dir) + gallery
        if gallery:
            parts.append(_section(title, gallery))
    parts.append(_section("Compute cost", _cost_table(study_dir / "steps")))
    parts.append(_section("Provenance", _provenance(record)))
    parts.append("</body></html>")
    out = study_dir / "report.html"
    write_text(out, "\n".join(parts))
    return out


def plot_learning_curve(summary: dict, path: Path) -> None:
    """The learning-curve figure of the learning-curve stage, with the study's first pretrained model as baseline."""
    from mlip_exafs.learning_curve import plot_learning_curve as plot, summarize_by_n

    rows = summary["learning_curve"]
    pristine = [v["validation"] for k, v in summary["potentials"].items() if "-ft-" not in k]
    baseline = pristine[0] if pristine else {"force_mae_ev_a": float("nan"), "softening_slope": float("nan")}
    plot(rows, summarize_by_n(rows, keys=("force_mae_ev_a", "softening_slope")), baseline, path)


def _head(title: str) -> str:
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "th{background:#f0f0f0}td:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}"
        "figure{display:inline-block;margin:6px;max-width:48%;vertical-align:top}figcaption{font-size:0.8em;color:#555}"
        "pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:0.8em}"
    )
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>mlip-exafs: {html.escape(title)}</title><style>{style}</style></head><body>"


def _section(title: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n{body}"


def _overview(summary: dict, record: dict) -> str:
    n = summary.get("recommended_n")
    verdict = f"<b>Recommended training-set size: N = {n}</b>" if n else f"<b>No N met the criteria</b>{_closest(summary)}"
    dataset = record["config"]["dataset"]
    if isinstance(dataset, dict):
        dataset = f"sampled and labelled with CP2K in this study ({dataset['train']['structure']}, steps/dataset)"
    return (
        f"<h1>mlip-exafs study: {html.escape(summary['study'])}</h1>"
        f"<p>Structure {html.escape(str(record['config']['structure']))}, absorber {html.escape(record['config']['absorber'])}, "
        f"dataset {html.escape(str(dataset))}, profile {html.escape(str(record.get('profile') or 'none (base config)'))}.</p>"
        f"<p>{verdict}<br><small>Rule: {html.escape(summary.get('recommended_n_rule', ''))}</small></p>"
    )


def _closest(summary: dict) -> str:
    """Where the largest N stands when no N passes: what the reader needs to decide on more data."""
    rows = summary["learning_curve"]
    if not rows:
        return ""
    largest = max(r["n"] for r in rows)
    at_largest = [r for r in rows if r["n"] == largest]
    slope = sum(r["softening_slope"] for r in at_largest) / len(at_largest)
    force_mae = sum(r["force_mae_ev_a"] for r in at_largest) / len(at_largest)
    return (
        f" — at the largest N ({largest}, mean of {len(at_largest)} seed(s)) the softening slope is {slope:.3f} "
        f"and the force MAE {force_mae:.3f} eV/Å; label more structures or add a larger N"
    )


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.4g}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _validation_table(summary: dict) -> str:
    keys = ["energy_mae_mev_atom", "force_mae_ev_a", "force_rmse_ev_a", "stress_mae_gpa", "softening_slope", "cmae_ev_a", "n_test_structures"]
    header = ["potential", "E MAE (meV/atom)", "F MAE (eV/Å)", "F RMSE (eV/Å)", "σ MAE (GPa)", "softening slope", "cMAE (eV/Å)", "test structures"]
    rows = [[name] + [entry["validation"][k] for k in keys] for name, entry in summary["potentials"].items()]
    return _table(header, rows)


def _group_table(steps_dir: Path) -> str:
    """Force errors per kind of test structure (validate_by_group.json of every validate step)."""
    rows = []
    for path in sorted(steps_dir.glob("validate-*/validate_by_group.json"), key=lambda p: natural(p.parent.name)):
        for group, g in read_json(path).items():
            rows.append([path.parent.name.removeprefix("validate-"), group, g["n_test_structures"], g["force_mae_ev_a"],
                         g["mean_abs_dft_force_ev_a"], g["softening_slope"], g["stress_mae_gpa"]])
    if not rows:
        return ""
    header = ["potential", "test structures made by", "n", "F MAE (eV/Å)", "mean |F_DFT| (eV/Å)", "softening slope", "σ MAE (GPa)"]
    return "<h3>By how the test structures were made</h3>" + _table(header, rows)


def _msrd_table(summary: dict, steps_dir: Path) -> str:
    with_md = {k: v["msrd"] for k, v in summary["potentials"].items() if v.get("msrd")}
    if not with_md:
        return ""
    shells = list(next(iter(with_md.values())))
    header = ["potential", "T (K), production mean ± std"] + [f"{s}: r (Å) / σ² (Å²)" for s in shells]
    rows = [[name, production_temperature(steps_dir / f"md-{name}")]
            + [f"{m[s]['r_mean']:.4f} / {m[s]['sigma2']:.5f}" if s in m else None for s in shells] for name, m in with_md.items()]
    note = ("<p><small>σ² grows with temperature (∝ T for a harmonic bond), so each row's σ² belongs to the temperature "
            "its MD actually ran at. All MDs of a study share the thermostat seed, so they ran at the same realized "
            "temperature and their σ² compare directly (docs/md.md).</small></p>")
    return _table(header, rows) + note


def production_temperature(md_folder: Path) -> str | None:
    """'mean ± std' of an MD step's production temperature (K); None if the folder has no md.json."""
    from mlip_exafs.md import SUMMARY_FILE, production_temperature_text  # md imports ASE: only when a study has MDs

    path = md_folder / SUMMARY_FILE
    return production_temperature_text(read_json(path)) if path.exists() else None


def _exafs_table(summary: dict) -> str:
    rows = [[name, e["r_factor_r"], e["r_factor_k"], e["s02"], e["de0_ev"], f"{e['kmin']}–{e['kmax']}", f"{e['rmin']}–{e['rmax']}"]
            for name, v in summary["potentials"].items() if (e := v.get("exafs"))]
    if not rows:
        return ""
    return _table(["potential", "R-factor (R)", "R-factor (k)", "S0²", "ΔE0 (eV)", "k range (Å⁻¹)", "R range (Å)"], rows)


def _img(path: Path, caption: str, wide: bool = False) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    style = " style='max-width:100%'" if wide else ""
    return f"<figure{style}><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'><figcaption>{html.escape(caption)}</figcaption></figure>"


def _gallery(steps_dir: Path, prefix: str) -> str:
    if not steps_dir.exists():
        return ""
    folders = sorted((p for p in steps_dir.iterdir() if p.name.startswith(prefix)), key=lambda p: natural(p.name))
    shown = first_seed_only(folders)
    figures = []
    for folder in shown:
        for png in sorted(folder.rglob("*.png")):
            figures.append(_img(png, f"{folder.name[len(prefix):]}: {png.stem.replace('_', ' ')}"))
    if len(shown) < len(folders):
        figures.append(f"<p><small>Plots of the first seed of each N; those of the other seeds are in "
                       f"<code>{html.escape(steps_dir.name)}/{prefix}*</code>, their numbers in the tables above.</small></p>")
    return "\n".join(figures)


def first_seed_only(folders: list[Path]) -> list[Path]:
    """Pristine folders and fine-tuned ones of the smallest seed: a paper study's 3 seeds x 7 N would
    otherwise put ~90 near-identical plots in the report."""
    seeds = [int(m.group(1)) for f in folders if (m := SEED_SUFFIX.search(f.name))]
    first = min(seeds, default=None)
    return [f for f in folders if not (m := SEED_SUFFIX.search(f.name)) or int(m.group(1)) == first]


def _cost_table(steps_dir: Path) -> str:
    """Wall time of every step, so a user sees what a profile costs on their machine."""
    records = [read_json(p) for p in sorted(steps_dir.glob("*/step.json"), key=lambda p: natural(p.parent.name))]
    rows = [[r["step"], _seconds(r.get("wall_s"))] for r in records]
    total = sum(r.get("wall_s") or 0.0 for r in records)
    note = "<p><small>Wall time of each step, killed and resumed runs included; steps on parallel workers overlap.</small></p>"
    return _table(["step", "wall time (s)"], rows + [["sum of steps", f"{_seconds(total)} ({total / 3600:.2f} h)"]]) + note


def _seconds(wall_s: float | None) -> str | None:
    """Whole seconds, so an MD's 22159 s does not read as 2.216e+04."""
    return None if wall_s is None else f"{wall_s:.1f}" if wall_s < 100 else f"{wall_s:.0f}"


def _exafs_overlay(study_dir: Path) -> str:
    """One figure with every shown potential's χ(k) and |FT| (the pristine ones and the first seed of each N)."""
    from mlip_exafs.exafs import FTWindowSettings, plot_models, read_chi_csv  # imports ASE: only when a study has EXAFS

    steps = study_dir / "steps"
    folders = first_seed_only(sorted(steps.glob("exafs-*/"), key=lambda p: natural(p.name)))
    folders = [f for f in folders if (f / "chi.csv").exists() and (f / "exafs.json").exists()]
    if len(folders) < 2:
        return ""
    window = FTWindowSettings(**read_json(folders[0] / "exafs.json")["settings"]["ft"]).window()
    path = study_dir / "exafs_models.png"
    plot_models({f.name.removeprefix("exafs-"): read_chi_csv(f / "chi.csv") for f in folders}, window, path)
    return _img(path, "all potentials: k-weighted χ(k) and its Fourier transform", wide=True)


def _experiment_overlay(study_dir: Path) -> str:
    """The experiment and every shown potential's χ(k), each with its own fitted S0² and ΔE0, on one figure."""
    import numpy as np

    from mlip_exafs.compare import FITTED_FILE
    from mlip_exafs.exafs import plot_models
    from mlip_exafs.spectra import FTWindow

    folders = first_seed_only(sorted(study_dir.glob("steps/compare-*/"), key=lambda p: natural(p.name)))
    folders = [f for f in folders if (f / FITTED_FILE).exists() and (f / "compare.json").exists()]
    if not folders:
        return ""
    fitted = {f.name.removeprefix("compare-"): np.loadtxt(f / FITTED_FILE, delimiter=",", skiprows=1, ndmin=2) for f in folders}
    c = read_json(folders[0] / "compare.json")
    window = FTWindow(c["kmin"], c["kmax"], c["settings"]["dk_inv_a"], c["kweight"])
    first = next(iter(fitted.values()))
    chis = {"experiment": (first[:, 0], first[:, 1])} | {name: (d[:, 0], d[:, 2]) for name, d in fitted.items()}
    path = study_dir / "exafs_experiment.png"
    plot_models(chis, window, path, reference="experiment")
    return _img(path, "experiment and every potential (each with its fitted S0², ΔE0): k-weighted χ(k) and its Fourier transform", wide=True)


def _provenance(record: dict) -> str:
    return "<pre>" + html.escape(json.dumps(record, indent=2, default=str)) + "</pre>"
