"""One self-contained HTML report of a study: the answer first, the figures that decide it, the rest on demand.

The first screen is the verdict (``<section id="verdict">``): per potential its
softening slope, force MAE, σ² of the first shells against the experiment's own
fitted σ² (or, without an experiment, against the best fine-tuned model), its
EXAFS R-factor, and the recommended N with the rule that chose it, in sentences.
A study of pretrained potentials only (no DFT dataset) gets the same verdict
without the DFT half: which potential agrees best with the experiment.
Then the deciding figures (learning curve, σ² per shell vs N, R-factor vs N,
the experiment with every potential), σ²(T) of a temperature series; tables per
seed and per test group, galleries and provenance sit in collapsed
``<details>``. Plots are embedded as base64 PNGs so the file can be mailed or
archived alone; the report's own figures are also written as SVG beside their
PNG, journal-column sized, so they go into a paper as they are. The report is
built only from files on disk (``summary.json`` — or the finished steps of an
unfinished study — ``study.json`` and the step folders), so ``mlip-exafs report
DIR`` can rebuild it any time. It finds a step's folder and what the step is
about (action, potential, N, seed, temperature) from the study's step records,
never from folder names. A fit recorded as failed (``fit_failed``, docs/robustness.md
"Failed fits") reads "failed" wherever its R-factor would stand, ranks no potential,
and a failed shell fit of the experiment holds no MD's σ².
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D

from mlip_exafs.analysis import read_result as read_analysis
from mlip_exafs.compare import FitFiles, read_fit
from mlip_exafs.compare import OutFiles as CompareFiles
from mlip_exafs.compare import read_result as read_compare
from mlip_exafs.exafs import FTWindowSettings, read_chi_csv
from mlip_exafs.exafs import OutFiles as ExafsFiles
from mlip_exafs.exafs import read_result as read_exafs
from mlip_exafs.files import read_json, save_figure, write_text
from mlip_exafs.md import production_temperature_text
from mlip_exafs.md import read_result as read_md
from mlip_exafs.plots import plot_models, plt
from mlip_exafs.plots import plot_learning_curve as plot_curve
from mlip_exafs.quantum import einstein_sigma2_a2, reduced_mass_amu
from mlip_exafs.recommend import SLOPE_TOLERANCE, recommend_n, summarize_by_n
from mlip_exafs.spectra import FTWindow
from mlip_exafs.study.pipeline import (RECORD_FILE, REPORT_FILE, STEPS_DIR, SUMMARY_FILE, study_steps, summary_is_current,
                                      summary_of_finished_steps)
from mlip_exafs.study.steps import STEP_FILE, Step
from mlip_exafs.validate import OutFiles as ValidateFiles

VERDICT_SHELLS = 2  # σ² of this many first shells go into the verdict (the experiment fit's shells when there is one)
SERIES_SHELLS = 3  # σ²(T) of this many first shells of the absorber
COLUMN_IN, FULL_WIDTH_IN = 3.4, 7.0  # journal single-column and full-page widths


@dataclass
class StudyView:
    """What the report reads, once: the summary, the study record, its steps and the per-shell σ² errors of every MD."""

    folder: Path
    summary: dict
    record: dict
    steps: list[Step] = field(default_factory=list)  # the study's step records, in the pipeline's order
    md_shells: dict = field(default_factory=dict)  # (potential, T) -> shell label -> analysis.json shell (sigma2_err, neighbor)

    @property
    def steps_dir(self) -> Path:
        return self.folder / STEPS_DIR

    def folder_of(self, step: Step) -> Path:
        return self.steps_dir / step.name

    @property
    def potentials(self) -> dict:
        return self.summary["potentials"]

    @property
    def models(self) -> dict[str, Step]:
        """potential -> the first step about it (which carries its N and seed)."""
        found: dict[str, Step] = {}
        for step in self.steps:
            if step.potential is not None:
                found.setdefault(step.potential, step)
        return found

    @property
    def pristine(self) -> list[str]:
        models = self.models
        return [name for name in self.potentials if name in models and models[name].n is None]

    @property
    def finetuned_md(self) -> list[tuple[int, str]]:
        """(N, name) of the fine-tuned models that have MD, N ascending."""
        models = self.models
        return sorted((models[name].n, name) for name, v in self.potentials.items()
                      if name in models and models[name].n is not None and v.get("msrd"))

    @property
    def finetunes(self) -> bool:
        return any(s.action == "finetune" for s in self.steps)

    @property
    def temperatures(self) -> list[float]:
        """The MD temperatures (K), first one first: the one the summary's top-level numbers belong to."""
        return list(dict.fromkeys(s.temperature_k for s in self.steps if s.action == "md"))

    @property
    def nuclei(self) -> str:
        return self.record["config"].get("md", {}).get("nuclei", "classical")

    def of(self, action: str, temperature_k: float | None = None) -> list[Step]:
        """The steps of one action (at one temperature, when given), in the pipeline's order."""
        return [s for s in self.steps if s.action == action and (temperature_k is None or s.temperature_k == temperature_k)]

    def sigma2_err(self, name: str, shell: str, temperature_k: float | None = None) -> float | None:
        """σ² error (Å²) of one shell of one MD (the first temperature's unless given)."""
        key = (name, self.temperatures[0] if temperature_k is None and self.temperatures else temperature_k)
        return self.md_shells.get(key, {}).get(shell, {}).get("sigma2_err")

    def all_experiment_fits(self) -> dict[float, dict]:
        """T (K) -> the experiment's own shell fit of the spectrum measured at that temperature, failed fits included."""
        experiment = self.summary.get("experiment") or {}
        spectra = experiment.get("spectra")
        if spectra is None and experiment:  # a summary from before spectra had temperatures: one, at the first MD temperature
            spectra = [{"temperature_k": self.temperatures[0] if self.temperatures else None, "fit": experiment.get("fit")}]
        return {s["temperature_k"]: s["fit"] for s in spectra or [] if s.get("fit")}

    def experiment_fits(self) -> dict[float, dict]:
        """The experiment's shell fits that are results: a failed fit's σ² are no measurement to hold an MD against."""
        return {t: fit for t, fit in self.all_experiment_fits().items() if not failed_because(fit)}

    @property
    def failed_fit(self) -> dict | None:
        """The experiment's shell fit at the first MD temperature, when it failed."""
        fit = self.all_experiment_fits().get(self.temperatures[0]) if self.temperatures else None
        return fit if failed_because(fit) else None

    def first_spectrum_k(self) -> float | None:
        """The temperature of the first spectrum, whose comparison is each potential's top-level ``exafs``."""
        spectra = (self.summary.get("experiment") or {}).get("spectra")
        return spectra[0]["temperature_k"] if spectra else self.temperatures[0] if self.temperatures else None

    @property
    def fit(self) -> dict | None:
        """The experiment's shell fit at the first MD temperature: what the verdict holds σ² against."""
        return self.experiment_fits().get(self.temperatures[0]) if self.temperatures else None

    def shells(self) -> list[str]:
        """The shells the verdict compares: the experiment fit's, else the first shells of the MDs."""
        if self.fit:
            return list(self.fit["shells"])[:VERDICT_SHELLS]
        with_md = [v["msrd"] for v in self.potentials.values() if v.get("msrd")]
        return list(with_md[0])[:VERDICT_SHELLS] if with_md else []


def failed_because(record: dict | None) -> str | None:
    """Why a fit is no result (its record's ``fit_failed``, docs/robustness.md "Failed fits"); None for a good fit, or none."""
    return (record or {}).get("fit_failed")


def _why(reason: str) -> str:
    """The reason of a failed fit without its advice (after '; '): short enough for a sentence of the verdict."""
    return html.escape(reason.split("; ")[0])


def load_view(study_dir: Path) -> StudyView:
    """summary.json, or for a study still running the summary of its finished steps (unfinished ones named)."""
    path = study_dir / SUMMARY_FILE
    summary = read_json(path) if path.exists() else None
    if summary is None or not summary_is_current(study_dir, summary):
        summary = summary_of_finished_steps(study_dir)
    view = StudyView(study_dir, summary, read_json(study_dir / RECORD_FILE), study_steps(study_dir))
    for step in view.of("analyze"):
        if result := read_analysis(view.folder_of(step)):
            view.md_shells[(step.potential, step.temperature_k)] = {s["label"]: s for s in result["trajectories"][0]["shells"]}
    return view


def write_report(study_dir: Path) -> Path:
    """Build ``report.html`` (and its figures, PNG + SVG) from a study folder."""
    view = load_view(study_dir)
    parts = [_head(view.summary["study"]), _title(view), _verdict(view), _deciding_figures(view), _temperature_section(view)]
    parts += [_parity_section(view), *_on_demand(view), "</body></html>"]
    out = study_dir / REPORT_FILE
    write_text(out, "\n".join(p for p in parts if p))
    return out


# ---------------------------------------------------------------- page frame

def _head(title: str) -> str:
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:1.2em auto;color:#222;line-height:1.35}"
        "h1{font-size:1.45em;margin:0.2em 0}h2{font-size:1.2em;margin:1em 0 0.4em}"
        "table{border-collapse:collapse;margin:0.4em 0}td,th{border:1px solid #ccc;padding:2px 7px;text-align:right}"
        "th{background:#f0f0f0}td:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}"
        "figure{display:inline-block;margin:4px;vertical-align:top}figure.half{width:48%}figure.third{width:31%}figure.wide{width:98%}"
        "figcaption{font-size:0.8em;color:#555}"
        ".beside{display:flex;gap:1em;align-items:flex-start}.beside figure{flex:3}.beside div{flex:1}"
        "pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:0.8em}"
        "#verdict{border:2px solid #2a6;border-radius:6px;padding:0.3em 1em 0.6em;background:#f6fbf7}"
        "#verdict h2{margin-top:0.3em}#verdict li{margin:0.15em 0}.answer{font-size:1.1em}"
        "details{margin:0.5em 0;border-top:1px solid #ddd;padding-top:0.3em}summary{font-weight:600;cursor:pointer}"
        "small{color:#555}@media print{details:not([open])>*:not(summary){display:none}}"
    )
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>mlip-exafs: {html.escape(title)}</title><style>{style}</style></head><body>"


def _title(view: StudyView) -> str:
    config = view.record["config"]
    dataset = config.get("dataset")
    if isinstance(dataset, dict):
        dataset = f"sampled and labelled with CP2K in this study ({dataset['train']['structure']}, steps/dataset)"
    dataset = f"DFT dataset {dataset}" if dataset else "no DFT dataset (pretrained potentials only)"
    return (
        f"<h1>mlip-exafs study: {html.escape(view.summary['study'])}</h1>"
        f"<p><small>Structure {html.escape(str(config['structure']))}, absorber {html.escape(config['absorber'])}, "
        f"{html.escape(str(dataset))}, profile {html.escape(str(view.record.get('profile') or 'none (base config)'))}.</small></p>"
    )


def _section(title: str, body: str, anchor: str | None = None) -> str:
    ident = f" id='{anchor}'" if anchor else ""
    return f"<section{ident}><h2>{html.escape(title)}</h2>\n{body}</section>"


def _details(title: str, body: str) -> str:
    return f"<details><summary>{html.escape(title)}</summary>\n{body}</details>" if body else ""


def _kelvin(temperatures_k) -> str:
    """'10, 100 and 300 K'."""
    names = [f"{t:g}" for t in temperatures_k]
    return (", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]) + " K"


# ---------------------------------------------------------------- the verdict

def _verdict(view: StudyView) -> str:
    items = [_pristine_sentence(view, name) for name in view.pristine]
    items += [_finetuned_sentence(view, n, name) for n, name in view.finetuned_md]
    if view.fit:
        items.append(_experiment_sentence(view))
    elif view.failed_fit:
        items.append(_failed_experiment_sentence(view))
    if series := temperature_series(view):
        items.append(_temperature_sentence(view, series))
    answer = _recommendation(view) if view.finetunes else _pristine_answer(view)
    body = answer + "<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>" + _verdict_table(view)
    notes = []
    if view.finetuned_md or any(view.potentials[p].get("msrd") for p in view.pristine):
        notes.append(_nuclei_note(view))
    if view.summary.get("unfinished_steps"):
        notes.append("Unfinished steps, not in this report yet: " + ", ".join(html.escape(s) for s in view.summary["unfinished_steps"]) + ".")
    body += "".join(f"<p><small>{note}</small></p>" for note in notes)
    return _section("Verdict", body, anchor="verdict")


def _nuclei_note(view: StudyView) -> str:
    """Whether the MD σ² hold the zero-point motion that a measured σ² holds."""
    if view.nuclei == "corrected":
        return "σ² are quantum: classical MD with the harmonic quantum correction of each shell (zero-point motion included); ratios are MD / reference."
    if view.nuclei == "path-integral":
        return "σ² are quantum: path-integral MD (zero-point motion included); ratios are MD / reference."
    return ("σ² from classical MD lacks zero-point motion, which the experiment includes; ratios are MD / reference." if view.fit
            else "σ² are from classical MD (no zero-point motion); ratios are MD / reference.")


def _recommendation(view: StudyView) -> str:
    """The answer to 'how much DFT does it take': the recommended N and the rule, in words."""
    n = view.summary.get("recommended_n")
    base = view.record["config"].get("finetune", {}).get("base", "the base model")
    rule = html.escape(view.summary.get("recommended_n_rule", ""))
    if n is None:
        return f"<p class='answer'><b>No training-set size met the criteria</b>{_closest(view.summary)}.</p><p><small>Rule: {rule}.</small></p>"
    largest = max((r["n"] for r in view.summary["learning_curve"]), default=n)
    dft_alone = recommend_n(summarize_by_n(view.summary["learning_curve"]))
    flattened = dft_alone is not None and dft_alone < n  # a smaller N passed the DFT criteria: only the EXAFS one asked for more
    caveat = " It is the largest N tried: the learning curve may not have flattened yet." if n == largest and not flattened else ""
    unfinished = view.summary.get("unfinished_steps") or []
    provisional = f"Provisional, {len(unfinished)} step(s) still to run: " if unfinished else ""
    return (f"<p class='answer'><b>{provisional}Recommended: fine-tune {html.escape(base)} on N = {n} DFT-labelled structures.</b>{caveat}</p>"
            f"<p><small>Rule: {rule}.</small></p>")


def _pristine_answer(view: StudyView) -> str:
    """The answer of a study without fine-tuning: which pretrained potential the experiment favours."""
    at = f" at {view.first_spectrum_k():g} K" if len(view.temperatures) > 1 else ""
    compared = {name: e for name in view.pristine if (e := view.potentials[name].get("exafs"))}
    ranked = sorted((e["r_factor_r"], name) for name, e in compared.items() if not failed_because(e))
    failed = [html.escape(name) for name, e in compared.items() if failed_because(e)]
    if len(ranked) > 1:
        (r_best, best), (r_next, second) = ranked[:2]
        answer = (f"<b>Of the pretrained potentials, {html.escape(best)} agrees best with the experiment</b>: EXAFS R-factor "
                  f"{r_best:.3f}{at}, against {r_next:.3f} for {html.escape(second)}.")
    elif ranked:
        answer = f"<b>Pretrained {html.escape(ranked[0][1])} against the experiment</b>: EXAFS R-factor {ranked[0][0]:.3f}{at}."
    elif failed:
        answer = f"<b>No pretrained potential can be ranked by the experiment</b>: the EXAFS fit of each failed{at}."
    else:
        answer = "<b>Pretrained potentials only</b>: their MD structure is below; without an experiment's EXAFS there is nothing to rank them by."
    if failed and ranked:
        answer += f" The EXAFS fit of {', '.join(failed)} failed{at}: not ranked."
    validated = any(v.get("validation") for v in view.potentials.values())
    if validated:
        why = "No fine-tuning in this study"
    elif compared:
        why = "No DFT dataset in this study: nothing was fine-tuned or validated against DFT, so the verdict rests on the experiment alone"
    else:
        why = "No DFT dataset and no experiment in this study: nothing to judge the potentials by; add either to get a verdict"
    return f"<p class='answer'>{answer}</p><p><small>{why}.</small></p>"


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


def stiffness(slope: float) -> str:
    """Too soft / too stiff / as stiff as DFT, with the learning-curve rule's tolerance on the slope."""
    if slope < 1.0 - SLOPE_TOLERANCE:
        return "too soft"
    return "too stiff" if slope > 1.0 + SLOPE_TOLERANCE else "as stiff as DFT"


def _pristine_sentence(view: StudyView, name: str) -> str:
    v = view.potentials[name].get("validation")
    if v:
        text = (f"<b>Pretrained {html.escape(name)} is {stiffness(v['softening_slope'])}</b>: softening slope {v['softening_slope']:.2f} "
                f"(DFT = 1), force MAE {v['force_mae_ev_a']:.3f} eV/Å{_finetuned_reference(view, name)}.")
    else:
        text = f"<b>Pretrained {html.escape(name)}</b> (not validated against DFT: no dataset)."
    return text + _sigma2_clause(view, name) + _r_factor_clause(view, name)


def _finetuned_reference(view: StudyView, name: str) -> str:
    """'; fine-tuned on N = 10 (mean of 3 seeds): slope 0.99, 0.122 eV/Å' at the recommended (else largest) N, for the
    base model's sentence only: the other pretrained potentials were not fine-tuned."""
    rows = view.summary["learning_curve"]
    if not rows or name != view.record["config"].get("finetune", {}).get("base"):
        return ""
    n = view.summary.get("recommended_n") or max(r["n"] for r in rows)
    at_n = [r for r in rows if r["n"] == n]
    slope = sum(r["softening_slope"] for r in at_n) / len(at_n)
    mae = sum(r["force_mae_ev_a"] for r in at_n) / len(at_n)
    return f"; fine-tuned on N = {n} (mean of {len(at_n)} seed{'s' if len(at_n) > 1 else ''}): slope {slope:.2f}, {mae:.3f} eV/Å"


def _finetuned_sentence(view: StudyView, n: int, name: str) -> str:
    v = view.potentials[name]["validation"]
    text = (f"<b>Fine-tuned on N = {n}</b> (seed {view.models[name].seed}): {stiffness(v['softening_slope'])}, softening slope {v['softening_slope']:.2f}, "
            f"force MAE {v['force_mae_ev_a']:.3f} eV/Å.")
    return text + _sigma2_clause(view, name) + _r_factor_clause(view, name)


def sigma2_reference(view: StudyView) -> tuple[str, str | None, dict[str, tuple[float, float | None]]] | None:
    """What σ² is held against (words, model name or None, shell -> (σ², error)): the experiment's shell fit,
    else the fine-tuned MD at the recommended (else largest) N."""
    if view.fit:
        return "the experiment's", None, {s: (f["sigma2"], f["sigma2_err"]) for s, f in view.fit["shells"].items()}
    if not view.finetuned_md:
        return None
    recommended = view.summary.get("recommended_n")
    n, name = next(((n, m) for n, m in view.finetuned_md if n == recommended), view.finetuned_md[-1])
    msrd = view.potentials[name]["msrd"]
    return f"the fine-tuned N = {n} model's", name, {s: (msrd[s]["sigma2"], view.sigma2_err(name, s)) for s in msrd}


def _sigma2_clause(view: StudyView, name: str) -> str:
    msrd = view.potentials[name].get("msrd")
    if not msrd:
        md = view.of("md", view.temperatures[0] if view.temperatures else None)
        pending = any(s.potential == name and s.name in view.summary.get("unfinished_steps", []) for s in md)
        return " Its MD is still running." if pending else ""
    reference = sigma2_reference(view)
    if reference is None or reference[1] == name:
        return " σ²: " + ", ".join(f"{s} {msrd[s]['sigma2']:.5f} Å²" for s in view.shells() if s in msrd) + "."
    whose, _, ref = reference
    parts = []
    for shell in view.shells():
        if shell not in msrd or shell not in ref or ref[shell][0] <= 0:
            continue
        md, md_err = msrd[shell]["sigma2"], view.sigma2_err(name, shell)
        value, err = ref[shell]
        parts.append(f"{shell} {md:.5f} Å² is {md / value:.2f}× {whose} ({value:.5f}{_pm(err)} Å²{_bars(md, md_err, value, err)})")
    return (" Its σ² of " + "; ".join(parts) + ".") if parts else ""


def _pm(err: float | None) -> str:
    return f" ± {err:.5f}" if err else ""


def _bars(md: float, md_err: float | None, ref: float, ref_err: float | None) -> str:
    """', 8.9 error bars above': the difference in combined 1-σ errors, when there are errors."""
    combined = math.hypot(md_err or 0.0, ref_err or 0.0)
    if combined <= 0:
        return ""
    z = (md - ref) / combined
    return ", within the error bars" if abs(z) < 1 else f", {abs(z):.1f} error bars {'above' if z > 0 else 'below'}"


def exafs_by_temperature(view: StudyView, name: str) -> dict[float, dict]:
    """T (K) -> the compare numbers of one potential's MD-EXAFS against the experiment at that temperature."""
    entry = view.potentials[name]
    series = {float(t): e["exafs"] for t, e in (entry.get("by_temperature") or {}).items() if e.get("exafs")}
    if not series and entry.get("exafs") and view.temperatures:
        series = {view.temperatures[0]: entry["exafs"]}
    return series


def _r_factor_clause(view: StudyView, name: str) -> str:
    series = exafs_by_temperature(view, name)
    if len(series) > 1:
        each = ", ".join(f"{e['r_factor_r']:.3f} at {t:g} K (S0² {e['s02']:.2f})" for t, e in series.items() if not failed_because(e))
        failed = {t: reason for t, e in series.items() if (reason := failed_because(e))}
        text = f" Its MD-EXAFS fits the experiments with R-factor {each}." if each else ""
        if failed:
            text += f" Its EXAFS fit at {_kelvin(failed)} failed ({_why(next(iter(failed.values())))})."
        return text
    e = view.potentials[name].get("exafs")
    if not e:
        return ""
    if reason := failed_because(e):
        return f" Its EXAFS fit against the experiment failed ({_why(reason)}): no R-factor to judge it by."
    return f" Its MD-EXAFS fits the experiment with R-factor {e['r_factor_r']:.3f} (S0² {e['s02']:.2f}, ΔE0 {e['de0_ev']:.1f} eV)."


def _experiment_sentence(view: StudyView) -> str:
    fit = view.fit
    shells = "; ".join(f"σ²({s}) {f['sigma2']:.5f}{_pm(f['sigma2_err'])} Å² at {f['r']:.3f} Å (N = {f['n']:g})" for s, f in fit["shells"].items())
    source = Path(fit.get("experiment") or view.summary["experiment"].get("file", "")).name
    at = f" at {_kelvin(view.temperatures[:1])}" if len(view.temperatures) > 1 else ""
    return (f"<b>The experiment</b> ({html.escape(source)}){at}, fitted on its own with {len(fit['shells'])} FEFF shells of the ideal crystal "
            f"(N fixed, larch feffit, R-factor {fit['r_factor']:.4f}, S0² {fit['s02']:.2f}): {shells}.")


def _failed_experiment_sentence(view: StudyView) -> str:
    at = f" at {_kelvin(view.temperatures[:1])}" if len(view.temperatures) > 1 else ""
    return (f"<b>The experiment's own shell fit{at} failed</b> ({_why(failed_because(view.failed_fit))}): its σ² are no measurement, "
            "so no MD is held against them.")


def _temperature_sentence(view: StudyView, series: dict[str, dict[float, dict]]) -> str:
    """One sentence on the temperature series: where it ran, θ_E of the first shell per potential."""
    temperatures_k = sorted({t for points in series.values() for t in points})
    shell = series_shells(series)[0]
    thetas = [f"{html.escape(name)} {fit['theta_e_k']:.0f} K" for name in series
              if (fit := (view.potentials[name].get("einstein_k") or {}).get(shell))]
    text = f"<b>Temperature series</b>: MD at {_kelvin(temperatures_k)} ({view.nuclei} nuclei)"
    text += (f"; Einstein temperature θ_E of {shell}: " + ", ".join(thetas)) if thetas else ""
    ratios = {name: ", ".join(f"{md / measured:.2f}× at {t:g} K" for t, (md, _, measured, _) in at.items())
              for name in series if (at := sigma2_against_experiment(view, series, name, shell))}
    if ratios:
        text += (f"; σ² of {shell} against the experiment's own (MD / measured): "
                 + "; ".join(f"{html.escape(name)} {each}" for name, each in ratios.items()))
    return text + " (σ²(T) of each shell below)."


def sigma2_against_experiment(view: StudyView, series: dict[str, dict[float, dict]], name: str,
                              shell: str) -> dict[float, tuple[float, float | None, float, float | None]]:
    """T (K) -> (MD σ², its error, the experiment's fitted σ², its error) of one shell, at every temperature where
    both exist: the comparison a temperature series is run for, at each temperature, not only the first."""
    fits = view.experiment_fits()
    pairs = {}
    for t, msrd in series.get(name, {}).items():
        measured = fits.get(t, {}).get("shells", {}).get(shell)
        if shell in msrd and measured and measured["sigma2"] > 0:
            pairs[t] = (msrd[shell]["sigma2"], view.sigma2_err(name, shell, t), measured["sigma2"], measured["sigma2_err"])
    return pairs


def _verdict_table(view: StudyView) -> str:
    shells = view.shells()
    names = view.pristine + [name for _, name in view.finetuned_md]
    validated = any(view.potentials[name].get("validation") for name in names)
    exafs_temperatures = sorted({t for name in names for t in exafs_by_temperature(view, name)}, key=view.temperatures.index)
    by_temperature = len(exafs_temperatures) > 1
    at = f" at {view.temperatures[0]:g} K" if len(view.temperatures) > 1 else ""
    header = ["model"] + (["softening slope", "force MAE (eV/Å)"] if validated else []) + [f"σ² {s}{at} (Å²)" for s in shells]
    header += [f"EXAFS R-factor at {t:g} K" for t in exafs_temperatures] if by_temperature else (["EXAFS R-factor"] if exafs_temperatures else [])
    rows = []
    for name in names:
        v = view.potentials[name]
        msrd = v.get("msrd") or {}
        validation = v.get("validation") or {}
        row = [name] + ([validation.get("softening_slope"), validation.get("force_mae_ev_a")] if validated else [])
        row += [f"{msrd[s]['sigma2']:.5f}{_pm(view.sigma2_err(name, s))}" if s in msrd else None for s in shells]
        exafs = exafs_by_temperature(view, name)
        rows.append(row + [_r_factor_cell(exafs.get(t)) for t in exafs_temperatures])
    if view.fit or view.failed_fit:
        fit_shells = view.fit["shells"] if view.fit else {}
        row = ["experiment (shell fit)"] + ([None, None] if validated else [])
        row += [f"{fit_shells[s]['sigma2']:.5f}{_pm(fit_shells[s]['sigma2_err'])}" if s in fit_shells else None for s in shells]
        fits = view.all_experiment_fits()
        rows.append(row + [None if t not in fits else "failed (shell fit)" if failed_because(fits[t]) else f"{fits[t]['r_factor']:.4f} (shell fit)"
                           for t in exafs_temperatures])
    return _table(header, rows)


def _r_factor_cell(comparison: dict | None) -> float | str | None:
    """A comparison's R-space R-factor, or 'failed': a failed fit's R-factor is no result."""
    if comparison is None:
        return None
    return "failed" if failed_because(comparison) else comparison["r_factor_r"]


# ---------------------------------------------------------------- the deciding figures

def _deciding_figures(view: StudyView) -> str:
    figures = []
    if view.summary["learning_curve"]:
        path = view.folder / "learning_curve.png"
        plot_learning_curve(view, path)
        figures.append(_img(path, "learning curve: force MAE and softening slope vs N (seeds as dots)", "half"))
    if view.finetuned_md and view.shells():
        path = view.folder / "sigma2_vs_n.png"
        plot_sigma2_vs_n(view, path)
        band = ", experiment's shell fit (band)" if view.fit else ""
        figures.append(_img(path, f"σ² per shell vs N: fine-tuned MDs (points), pretrained (lines){band}", "half"))
    if any(_good_fit(view, name) for _, name in view.finetuned_md):
        path = view.folder / "r_factor_vs_n.png"
        plot_r_factor_vs_n(view, path)
        left_out = any(failed_because(view.potentials[name].get("exafs")) for name in view.potentials)
        figures.append(_img(path, "MD-EXAFS against the experiment: R-factor vs N (pretrained as lines)" + ("; failed fits left out" if left_out else ""), "half"))
    several = len(view.of("fit_experiment")) > 1
    for step in view.of("fit_experiment"):
        fit_png = FitFiles(view.folder_of(step)).plot
        if fit_png.exists():
            at = f" at {step.temperature_k:g} K" if several else ""
            failed = " — a failed fit, kept for diagnosis" if failed_because(read_fit(view.folder_of(step))) else ""
            figures.append(_img(fit_png, f"the experiment{at} and its own shell fit (FEFF paths of the ideal crystal){failed}", "half"))
    overlay = "".join(_experiment_overlay(view, t) for t in view.temperatures) or _exafs_overlay(view)
    body = "\n".join(figures) + overlay + _learning_curve_table(view)
    note = "<p><small>Each figure is also in the study folder as SVG beside its PNG, sized for a journal page.</small></p>"
    return _section("The figures that decide it", body + note) if body else ""


LEARNING_CURVE_COLUMNS = {"force_mae_ev_a": "F MAE (eV/Å)", "softening_slope": "softening slope",
                          "energy_mae_mev_atom": "E MAE (meV/atom)", "stress_mae_gpa": "σ MAE (GPa)"}


def _learning_curve_table(view: StudyView) -> str:
    """The learning curve's numbers, mean ± std over seeds per N, under the pretrained base model's."""
    rows = view.summary["learning_curve"]
    if not rows:
        return ""
    by_n = view.summary.get("learning_curve_by_n") or summarize_by_n(rows, keys=("force_mae_ev_a", "softening_slope"))
    keys = [k for k in LEARNING_CURVE_COLUMNS if f"{k}_mean" in by_n[0]]
    base = view.record["config"].get("finetune", {}).get("base")
    pretrained = (view.potentials.get(base) or {}).get("validation")
    table = [[f"0 (pretrained {base})", None] + [pretrained.get(k) for k in keys]] if pretrained else []
    table += [[entry["n"], entry["n_seeds"]] + [_mean_std(entry[f"{k}_mean"], entry[f"{k}_std"]) for k in keys] for entry in by_n]
    header = ["N", "seeds"] + [f"{LEARNING_CURVE_COLUMNS[k]}, mean ± std" for k in keys]
    return "<h3>Learning curve against held-out DFT (mean ± std over seeds)</h3>" + _table(header, table)


def _mean_std(mean: float | None, std: float) -> str | None:
    return None if mean is None else f"{mean:.4g} ± {std:.2g}"


def plot_learning_curve(view: StudyView, path: Path) -> None:
    """The learning-curve figure of the learning-curve stage, with the study's first pretrained model as baseline."""
    rows = view.summary["learning_curve"]
    pristine = [v for name in view.pristine if (v := view.potentials[name].get("validation"))]
    baseline = pristine[0] if pristine else {"force_mae_ev_a": float("nan"), "softening_slope": float("nan")}
    plot_curve(rows, summarize_by_n(rows, keys=("force_mae_ev_a", "softening_slope")), baseline, path)


def plot_sigma2_vs_n(view: StudyView, path: Path) -> None:
    """One panel per verdict shell: σ² of the fine-tuned MDs vs N, pretrained ones as lines, the experiment as a band."""
    shells = view.shells()
    fig, axes = plt.subplots(1, len(shells), figsize=(COLUMN_IN * len(shells) / 1.5, 2.4), layout="constrained", squeeze=False)
    ns = [n for n, _ in view.finetuned_md]
    for ax, shell in zip(axes[0], shells):
        points = [(n, view.potentials[name]["msrd"].get(shell), view.sigma2_err(name, shell)) for n, name in view.finetuned_md]
        points = [(n, s["sigma2"], e or 0.0) for n, s, e in points if s]
        ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points], fmt="o-", color="C0", ms=4, capsize=2, label="fine-tuned")
        for i, name in enumerate(p for p in view.pristine if (view.potentials[p].get("msrd") or {}).get(shell)):
            ax.axhline(view.potentials[name]["msrd"][shell]["sigma2"], color=f"C{i + 1}", ls="--", lw=1, label=name)
        if view.fit and shell in view.fit["shells"]:
            f = view.fit["shells"][shell]
            err = f["sigma2_err"] or 0.0
            ax.axhspan(f["sigma2"] - err, f["sigma2"] + err, color="0.8", zorder=0, label="experiment")
        ax.set_xscale("log")
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.minorticks_off()
        ax.set_xlabel("training structures N")
        ax.set_title(shell, fontsize=9)
    axes[0][0].set_ylabel("σ² (Å²)")
    legend = {label: handle for ax in axes[0] for handle, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncols=min(4, len(legend)), fontsize=7, frameon=False)
    save_figure(fig, path, vector=True)


def _good_fit(view: StudyView, name: str) -> dict | None:
    """A potential's comparison with the (first) experiment, unless there is none or it failed."""
    e = view.potentials[name].get("exafs")
    return e if e and not failed_because(e) else None


def plot_r_factor_vs_n(view: StudyView, path: Path) -> None:
    """R-space R-factor of each fine-tuned MD's EXAFS against the experiment vs N; pretrained as lines; failed fits left out."""
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.4), layout="constrained")
    points = [(n, e["r_factor_r"]) for n, name in view.finetuned_md if (e := _good_fit(view, name))]
    ax.plot([p[0] for p in points], [p[1] for p in points], "o-", color="C0", ms=4, label="fine-tuned")
    for i, name in enumerate(p for p in view.pristine if _good_fit(view, p)):
        ax.axhline(view.potentials[name]["exafs"]["r_factor_r"], color=f"C{i + 1}", ls="--", lw=1, label=name)
    ax.set_xscale("log")
    ax.set_xticks([p[0] for p in points], [str(p[0]) for p in points])
    ax.minorticks_off()
    ax.set_ylim(bottom=0)
    ax.set_xlabel("training structures N")
    ax.set_ylabel("R-factor (R space)")
    ax.legend(fontsize=7, frameon=False)
    save_figure(fig, path, vector=True)


def _exafs_overlay(view: StudyView) -> str:
    """One figure with every shown potential's χ(k) and |FT| (the pretrained ones and the first seed of each N)."""
    first = view.temperatures[0] if view.temperatures else None
    files = {s.potential: ExafsFiles(view.folder_of(s)) for s in first_seed_only(view.of("exafs", first))}
    shown = {name: f for name, f in files.items() if f.chi.exists() and f.summary.exists()}
    if len(shown) < 2:
        return ""
    window = FTWindowSettings(**read_exafs(next(iter(shown.values())).out)["settings"]["ft"]).window()
    chis = {name: read_chi_csv(f.chi) for name, f in shown.items()}
    path = view.folder / "exafs_models.png"
    plot_models(chis, window, path)
    return _img(path, "all potentials: k-weighted χ(k) and its Fourier transform", "wide")


def _experiment_overlay(view: StudyView, temperature_k: float) -> str:
    """The experiment at one temperature and every shown potential's χ(k), each with its own fitted S0² and ΔE0, on one figure."""
    files = {s.potential: CompareFiles(view.folder_of(s)) for s in first_seed_only(view.of("compare", temperature_k))}
    shown = {name: f for name, f in files.items() if f.fitted.exists() and f.summary.exists()}
    if not shown:
        return ""
    fitted = {name + (" (fit failed)" if failed_because(read_compare(f.out)) else ""): np.loadtxt(f.fitted, delimiter=",", skiprows=1, ndmin=2)
              for name, f in shown.items()}
    c = read_compare(next(iter(shown.values())).out)
    window = FTWindow(c["kmin"], c["kmax"], c["settings"]["dk_inv_a"], c["kweight"])
    first = next(iter(fitted.values()))
    chis = {"experiment": (first[:, 0], first[:, 1])} | {name: (d[:, 0], d[:, 2]) for name, d in fitted.items()}
    several = len(view.temperatures) > 1
    path = view.folder / (f"exafs_experiment_{temperature_k:g}K.png" if several and temperature_k != view.temperatures[0] else "exafs_experiment.png")
    plot_models(chis, window, path, reference="experiment")
    at = f" at {temperature_k:g} K" if several else ""
    return _img(path, f"experiment{at} and every potential (each with its fitted S0², ΔE0): k-weighted χ(k) and its Fourier transform", "wide")


# ---------------------------------------------------------------- σ²(T) of a temperature series

def temperature_series(view: StudyView) -> dict[str, dict[float, dict]]:
    """potential -> T (K) -> msrd, for the potentials with MD at two temperatures or more (summary ``by_temperature``)."""
    series = {}
    for name, entry in view.potentials.items():
        points = {float(t): e["msrd"] for t, e in (entry.get("by_temperature") or {}).items() if e.get("msrd")}
        if len(points) >= 2:
            series[name] = dict(sorted(points.items()))
    return series


def production_temperatures(view: StudyView, name: str) -> dict[float, float]:
    """Target T -> the temperature the potential's MD ran at (summary ``production_temperature_k``), where recorded."""
    entries = (view.potentials[name].get("by_temperature") or {}).items()
    return {float(t): e["production_temperature_k"] for t, e in entries if e.get("production_temperature_k")}


def series_shells(series: dict[str, dict[float, dict]]) -> list[str]:
    """The first shells of the absorber, in the order the analysis found them (nearest first)."""
    first = next(iter(series.values()))
    return list(next(iter(first.values())))[:SERIES_SHELLS]


def einstein_curve(view: StudyView, shell: str, fit: dict, temperatures_k: np.ndarray) -> np.ndarray | None:
    """σ²(T) of the correlated-Einstein model that the study fitted (mlip_exafs.quantum.fit_einstein):
    σ²_static + the harmonic σ² of a bond of frequency ω_E = kθ_E/ħ and the pair's reduced mass."""
    neighbor = next((s[shell]["neighbor"] for s in view.md_shells.values() if shell in s and "neighbor" in s[shell]), None)
    if neighbor is None:
        return None
    return einstein_sigma2_a2(fit, reduced_mass_amu(view.record["config"]["absorber"], neighbor), temperatures_k)


def plot_sigma2_vs_temperature(view: StudyView, series: dict[str, dict[float, dict]], path: Path) -> None:
    """One panel per shell: σ²(T) of each potential (quantum filled, classical open where they differ), its fitted
    correlated-Einstein curve, and the experiment's own fitted σ² at each temperature it was measured."""
    shells = series_shells(series)
    fig, axes = plt.subplots(1, len(shells), figsize=(min(FULL_WIDTH_IN, 2.3 * len(shells) + 0.3), 2.6), layout="constrained", squeeze=False)
    t_max_k = max(t for points in series.values() for t in points) * 1.1
    grid_k = np.linspace(1.0, t_max_k, 150)
    fits = view.experiment_fits()
    handles = {}
    ran_at = {name: production_temperatures(view, name) for name in series}  # the Einstein curves were fitted at these
    for ax, shell in zip(axes[0], shells):
        for i, (name, points) in enumerate(series.items()):
            color = f"C{i}"
            at = [(t, msrd[shell]) for t, msrd in points.items() if shell in msrd]
            errors = [view.sigma2_err(name, shell, t) or 0.0 for t, _ in at]
            ax.errorbar([ran_at[name].get(t, t) for t, _ in at], [s["sigma2"] for _, s in at], yerr=errors, fmt="o", color=color, ms=4, capsize=2)
            classical = [(ran_at[name].get(t, t), s["sigma2_classical"]) for t, s in at
                         if s.get("sigma2_classical") is not None and abs(s["sigma2_classical"] - s["sigma2"]) > 1e-7]
            if classical:
                ax.plot([t for t, _ in classical], [s for _, s in classical], "s", mfc="none", color=color, ms=4)
                handles["quantum σ² (filled), classical (open)"] = Line2D([], [], color="0.4", marker="s", mfc="none", ms=4, ls="none")
            fit = (view.potentials[name].get("einstein_k") or {}).get(shell)
            if fit and (curve := einstein_curve(view, shell, fit, grid_k)) is not None:
                ax.plot(grid_k, curve, "-", color=color, lw=1)
            handles[name] = Line2D([], [], color=color, marker="o", ms=4, lw=1)
        measured = [(t, fit["shells"][shell]) for t, fit in sorted(fits.items()) if shell in fit["shells"]]
        if measured:
            ax.errorbar([t for t, _ in measured], [f["sigma2"] for _, f in measured], yerr=[f["sigma2_err"] or 0.0 for _, f in measured],
                        fmt="D", color="k", ms=4, capsize=2)
            handles["experiment (shell fit)"] = Line2D([], [], color="k", marker="D", ms=4, ls="none")
        ax.set_xlim(0, t_max_k)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("T (K)")
        ax.set_title(shell, fontsize=9)
    axes[0][0].set_ylabel("σ² (Å²)")
    handles["correlated Einstein fit"] = Line2D([], [], color="0.4", lw=1)
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=min(3, len(handles)), fontsize=7, frameon=False)
    save_figure(fig, path, vector=True)


def _einstein_table(view: StudyView, series: dict[str, dict[float, dict]]) -> str:
    shells = series_shells(series)
    rows = [[name] + [f"{fit['theta_e_k']:.0f} / {fit['sigma2_static']:.5f}" if (fit := einstein.get(s)) else None for s in shells]
            for name in series if (einstein := view.potentials[name].get("einstein_k") or {})]
    if not rows:
        return ""
    kind = "quantum" if view.nuclei != "classical" else "classical"
    note = (f"<p><small>θ_E (K) / static offset (Å²) of the correlated Einstein model, σ²(T) = σ²_static + σ²_E(T; θ_E), "
            f"fitted to the MD's {kind} σ² at every temperature.</small></p>")
    return _table(["potential"] + [f"{s}: θ_E / offset" for s in shells], rows) + note


def _temperature_section(view: StudyView) -> str:
    """σ²(T) per shell and potential, with the Einstein fits and the experiment's points; θ_E in a table beside it."""
    series = temperature_series(view)
    if not series:
        return ""
    path = view.folder / "sigma2_vs_t.png"
    plot_sigma2_vs_temperature(view, series, path)
    points = "classical σ²" if view.nuclei == "classical" else "quantum σ² filled, classical open where they differ"
    caption = (f"σ²(T) per shell: MD ({points}; error bars: 1σ of the MD), "
               "each potential's correlated-Einstein fit (line), the experiment's own shell fit (diamonds)")
    body = f"<div class='beside'>{_img(path, caption, 'wide')}<div>{_einstein_table(view, series)}</div></div>"
    return _section(f"σ² against temperature ({view.nuclei} nuclei)", body + _measured_sigma2_table(view, series))


def _measured_sigma2_table(view: StudyView, series: dict[str, dict[float, dict]]) -> str:
    """Each potential's σ² beside the experiment's own fitted σ², shell by shell, at every measured temperature."""
    shells = list(dict.fromkeys(s for fit in view.experiment_fits().values() for s in fit["shells"]))
    pairs = {(name, shell): sigma2_against_experiment(view, series, name, shell) for name in series for shell in shells}
    temperatures_k = sorted({t for at in pairs.values() for t in at})
    rows = []
    for name in series:
        for t in temperatures_k:
            cells = [_measured_cell(pairs[name, shell].get(t)) for shell in shells]
            if any(cells):
                rows.append([name, f"{t:g}"] + cells)
    if not rows:
        return ""
    note = ("<p><small>MD σ² / the experiment's own shell-fit σ² (Å²), their ratio, and their difference in combined "
            f"1σ error bars; {'quantum' if view.nuclei != 'classical' else 'classical (no zero-point motion)'} MD σ².</small></p>")
    return _table(["potential", "T (K)"] + [f"σ² {s}: MD / experiment (Å²)" for s in shells], rows) + note


def _measured_cell(pair: tuple[float, float | None, float, float | None] | None) -> str | None:
    if pair is None:
        return None
    md, md_err, measured, measured_err = pair
    return f"{md:.5f} / {measured:.5f} ({md / measured:.2f}×{_bars(md, md_err, measured, measured_err)})"


# ---------------------------------------------------------------- parity plots and everything on demand

def _parity_section(view: StudyView) -> str:
    """Parity plots of the pretrained models and the largest N (first seed); every other model's on demand."""
    validations = first_seed_only(view.of("validate"))
    if not validations:
        return ""
    largest = max((s.n for s in validations if s.n is not None), default=None)
    shown = [s for s in validations if s.n is None or s.n == largest]
    others = [s for s in validations if s not in shown]
    body = "".join(_step_images(view, s, "third") for s in shown)
    body += _details(f"Parity plots of the other {len(others)} fine-tuned models", "".join(_step_images(view, s, "third") for s in others))
    return _section("Parity against held-out DFT (pretrained and largest N)", body)


def _step_images(view: StudyView, step: Step, size: str) -> str:
    """Every PNG a step wrote, captioned with its potential (and temperature, in a temperature series)."""
    label = step.potential or step.name
    if step.temperature_k is not None and len(view.temperatures) > 1:
        label += f" at {step.temperature_k:g} K"
    return "".join(_img(png, f"{label}: {png.stem.replace('_', ' ')}", size) for png in sorted(view.folder_of(step).glob("*.png")))


def _on_demand(view: StudyView) -> list[str]:
    return [
        _details("Validation of every model against DFT (each N and seed, each kind of test structure)",
                 _validation_table(view.summary) + _group_table(view)),
        _details("Structure from MD: σ² of every shell, RDFs, bond angles", _msrd_table(view) + _gallery(view, "analyze")),
        _details("Configuration-averaged EXAFS of each potential", _gallery(view, "exafs")),
        _details("Each potential against the experiment", _exafs_table(view) + "".join(_fit_table(view, s) for s in view.of("fit_experiment"))
                 + _gallery(view, "compare")),
        _details("Fine-tuning curves", _gallery(view, "finetune")),
        _details("Compute cost", _cost_table(view)),
        _details("Provenance (study.json)", _provenance(view.record)),
    ]


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
    rows = [[name] + [entry["validation"][k] for k in keys] for name, entry in summary["potentials"].items() if entry.get("validation")]
    return _table(header, rows) if rows else ""


def _group_table(view: StudyView) -> str:
    """Force errors per kind of test structure (validate_by_group.json of every validate step)."""
    rows = []
    for step in view.of("validate"):
        path = ValidateFiles(view.folder_of(step)).by_group
        if path.exists():
            for group, g in read_json(path).items():
                rows.append([step.potential, group, g["n_test_structures"], g["force_mae_ev_a"],
                             g["mean_abs_dft_force_ev_a"], g["softening_slope"], g["stress_mae_gpa"]])
    if not rows:
        return ""
    header = ["potential", "test structures made by", "n", "F MAE (eV/Å)", "mean |F_DFT| (eV/Å)", "softening slope", "σ MAE (GPa)"]
    return "<h3>By how the test structures were made</h3>" + _table(header, rows)


def _msrd_table(view: StudyView) -> str:
    """r and σ² of every shell of every MD (every temperature of a series), with the temperature it actually ran at."""
    analyses = [s for s in view.of("analyze") if _msrd_at(view, s)]
    if not analyses:
        return ""
    shells = list(_msrd_at(view, analyses[0]))
    several = len(view.temperatures) > 1
    header = ["potential"] + (["T (K)"] if several else []) + ["T (K), production mean ± std"] + [f"{s}: r (Å) / σ² (Å²)" for s in shells]
    md = {(s.potential, s.temperature_k): s for s in view.of("md")}
    rows = []
    for step in analyses:
        m = _msrd_at(view, step)
        row = [step.potential] + ([f"{step.temperature_k:g}"] if several else [])
        row.append(production_temperature(view.folder_of(md[(step.potential, step.temperature_k)])) if (step.potential, step.temperature_k) in md else None)
        rows.append(row + [f"{m[s]['r_mean']:.4f} / {m[s]['sigma2']:.5f}" if s in m else None for s in shells])
    note = ("<p><small>σ² grows with temperature (∝ T for a harmonic bond), so each row's σ² belongs to the temperature "
            "its MD actually ran at. All MDs of a study share the thermostat seed, so they ran at the same realized "
            "temperature and their σ² compare directly (docs/md.md).</small></p>")
    return _table(header, rows) + note


def _msrd_at(view: StudyView, step: Step) -> dict | None:
    """The summary's msrd of an analyze step: its potential's ``by_temperature`` entry, else the top-level (first temperature)."""
    entry = view.potentials.get(step.potential) or {}
    at = (entry.get("by_temperature") or {}).get(f"{step.temperature_k:g}")
    if at is not None:
        return at.get("msrd")
    return entry.get("msrd") if not view.temperatures or step.temperature_k == view.temperatures[0] else None


def production_temperature(md_folder: Path) -> str | None:
    """'mean ± std' of an MD step's production temperature (K); None if the folder has no md.json."""
    result = read_md(md_folder)
    return production_temperature_text(result) if result else None


def _exafs_table(view: StudyView) -> str:
    """The comparison of each potential's MD-EXAFS with the experiment (with each spectrum, in a temperature series)."""
    several = len(view.all_experiment_fits()) > 1 or any(len(exafs_by_temperature(view, name)) > 1 for name in view.potentials)
    rows, failures = [], []
    for name in view.potentials:
        for t, e in exafs_by_temperature(view, name).items() if several else [(None, view.potentials[name].get("exafs"))]:
            if e:
                r_factors = [f"failed ({e['r_factor_r']:.4g})", f"failed ({e['r_factor_k']:.4g})"] if failed_because(e) else [e["r_factor_r"], e["r_factor_k"]]
                rows.append([name] + ([f"{t:g}"] if several else [])
                            + r_factors + [e["s02"], e["de0_ev"], f"{e['kmin']}–{e['kmax']}", f"{e['rmin']}–{e['rmax']}"])
                if reason := failed_because(e):
                    failures.append(f"{html.escape(name)}{f' at {t:g} K' if several else ''}: {html.escape(reason)}")
    if not rows:
        return ""
    table = _table(["potential"] + (["T (K)"] if several else []) + ["R-factor (R)", "R-factor (k)", "S0²", "ΔE0 (eV)", "k range (Å⁻¹)", "R range (Å)"], rows)
    if failures:
        table += ("<p><small>Failed fits (docs/robustness.md, Failed fits), their numbers kept for diagnosis only: "
                  + "; ".join(failures) + ".</small></p>")
    return table


def _fit_table(view: StudyView, step: Step) -> str:
    """The experiment's shell fit, every parameter with its error."""
    fit = read_fit(view.folder_of(step))
    if fit is None:
        return ""
    rows = [[s, f["n"], f["r"], f.get("r_err"), f["sigma2"], f["sigma2_err"]] for s, f in fit["shells"].items()]
    at = f" at {step.temperature_k:g} K" if len(view.of("fit_experiment")) > 1 else ""
    reason = failed_because(fit)
    failed = f"<p><b>The fit failed</b>: {html.escape(reason)}. Its numbers are kept for diagnosis, not as a result.</p>" if reason else ""
    r_factor = f"R-factor failed ({fit['r_factor']:.4f})" if reason else f"R-factor {fit['r_factor']:.4f}"
    head = (f"<h3>The experiment's own shell fit{at}</h3>{failed}<p>S0² {fit['s02']:.3f}{_pm(fit.get('s02_err'))}, ΔE0 {fit['de0_ev']:.2f} eV, "
            f"{r_factor}, k {fit['kmin']:g}–{fit['kmax']:g} Å⁻¹, R {fit['rmin']:g}–{fit['rmax']:.2f} Å, "
            f"{fit['n_variables']} variables, {fit['n_independent']:.1f} independent points.</p>")
    return head + _table(["shell", "N (fixed)", "r (Å)", "r error (Å)", "σ² (Å²)", "σ² error (Å²)"], rows)


def _img(path: Path, caption: str, size: str = "half") -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f"<figure class='{size}'><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _gallery(view: StudyView, action: str) -> str:
    steps = view.of(action)
    shown = first_seed_only(steps)
    figures = [_step_images(view, step, "half") for step in shown]
    if len(shown) < len(steps):
        figures.append(f"<p><small>Plots of the first seed of each N; those of the other seeds are in "
                       f"<code>{html.escape(view.steps_dir.name)}/{action}-*</code>, their numbers in the tables above.</small></p>")
    return "\n".join(f for f in figures if f)


def first_seed_only(steps: list[Step]) -> list[Step]:
    """Steps of the pretrained models and of the fine-tuned ones of the smallest seed: a paper study's 3 seeds x 7 N
    would otherwise put ~90 near-identical plots in the report."""
    first = min((s.seed for s in steps if s.seed is not None), default=None)
    return [s for s in steps if s.seed is None or s.seed == first]


def _cost_table(view: StudyView) -> str:
    """Wall time of every step, so a user sees what a profile costs on their machine."""
    records = [read_json(path) for s in view.steps if (path := view.folder_of(s) / STEP_FILE).exists()]
    rows = [[r["step"], _seconds(r.get("wall_s"))] for r in records]
    total = sum(r.get("wall_s") or 0.0 for r in records)
    note = "<p><small>Wall time of each step, killed and resumed runs included; steps on parallel workers overlap.</small></p>"
    return _table(["step", "wall time (s)"], rows + [["sum of steps", f"{_seconds(total)} ({total / 3600:.2f} h)"]]) + note


def _seconds(wall_s: float | None) -> str | None:
    """Whole seconds, so an MD's 22159 s does not read as 2.216e+04."""
    return None if wall_s is None else f"{wall_s:.1f}" if wall_s < 100 else f"{wall_s:.0f}"


def _provenance(record: dict) -> str:
    return "<pre>" + html.escape(json.dumps(record, indent=2, default=str)) + "</pre>"
