"""The report of a temperature series (σ²(T), θ_E) and of a pristine-only study, from synthetic study folders.

The folders are what the pipeline leaves: step records from a real study config, results
summarized by the study's own ``summarize`` (so ``einstein_k`` is quantum.py's fit), σ² made
with the harmonic model at known Einstein temperatures.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from ase import units

from mlip_exafs.files import write_json
from mlip_exafs.quantum import HBAR_EV_FS, harmonic_sigma2_a2
from mlip_exafs.report import einstein_curve, load_view, temperature_series, write_report
from mlip_exafs.study.config import StudyConfig
from mlip_exafs.study.pipeline import EXAFS_KEYS, build_steps, summarize

from test_report import _png, _validation, _verdict_html, first_screen, needs_chromium, _assert_verdict_fills_the_first_screen

TEMPERATURES_K = [300.0, 10.0]
THETA_K = {"chgnet": 250.0, "sevennet-0": 300.0}  # Einstein temperature of W-W1; further shells softer
SHELLS = {"W-W1": 1.0, "W-W2": 0.9, "W-W3": 0.75}  # θ_E relative to the first shell's
STATIC_A2 = 0.0002
MU_W_AMU = 183.84 / 2
R_FACTOR = {("chgnet", 300.0): 0.08, ("chgnet", 10.0): 0.11, ("sevennet-0", 300.0): 0.05, ("sevennet-0", 10.0): 0.07}


def harmonic_sigma2(theta_k: float, temperature_k: float, quantum: bool) -> float:
    return STATIC_A2 + harmonic_sigma2_a2(units.kB * theta_k / HBAR_EV_FS, MU_W_AMU, temperature_k, quantum=quantum)


def experiment_fit(temperature_k: float) -> dict:
    """The W foil's shell fit as compare writes it, with σ² of a 280 K Einstein bond."""
    shells = {label: {"r": 2.74 + i * 0.42, "r_err": 0.004, "sigma2": round(harmonic_sigma2(280.0 * f, temperature_k, True), 6),
                      "sigma2_err": 0.0003, "n": 8.0 - 2 * i} for i, (label, f) in enumerate(list(SHELLS.items())[:2])}
    return {"s02": 0.94, "de0_ev": 4.7, "r_factor": 0.0186, "kmin": 3.0, "kmax": 14.0, "rmin": 1.0, "rmax": 3.98, "n_variables": 6,
            "n_independent": 21.8, "shells": shells, "experiment": f"/data/W_{temperature_k:g}K.xdi"}


def make_series_study(root: Path, dataset: str | None = "w-bcc", nuclei: str = "corrected") -> Path:
    """Pretrained CHGNet and SevenNet-0 at 300 and 10 K against a W spectrum at each temperature; no fine-tuning."""
    config = {"name": "w-series", "structure": "w-bcc", "absorber": "W", "pristine": list(THETA_K),
              "md": {"temperatures_k": TEMPERATURES_K, "nuclei": nuclei},
              "experiment": [{"file": f"/data/W_{t:g}K.xdi", "temperature_k": t} for t in TEMPERATURES_K]}
    if dataset:
        config |= {"dataset": dataset, "finetune": {"n": []}}
    config = StudyConfig.model_validate(config)
    steps = build_steps(config)
    results = {}
    for step in steps:
        folder = root / "steps" / step.name
        if step.action == "validate":
            results[step.name] = _validation(0.55 if step.potential == "chgnet" else 0.62, 0.6 if step.potential == "chgnet" else 0.5)
        elif step.action == "analyze":
            theta = THETA_K[step.potential]
            shells = [{"label": s, "neighbor": "W", "r_mean": 2.74, "sigma2": harmonic_sigma2(theta * f, step.temperature_k, nuclei != "classical"),
                       "sigma2_classical": harmonic_sigma2(theta * f, step.temperature_k, False), "sigma2_err": 0.00005} for s, f in SHELLS.items()]
            results[step.name] = {"msrd": {s["label"]: {k: s[k] for k in ("r_mean", "sigma2", "sigma2_classical")} for s in shells}}
            write_json(folder / "analysis.json", {"trajectories": [{"shells": shells}]})
        elif step.action == "compare":
            r = R_FACTOR[(step.potential, step.temperature_k)]
            results[step.name] = dict.fromkeys(EXAFS_KEYS, 1.0) | {"r_factor_r": r, "s02": 0.9}
        elif step.action == "fit_experiment":
            results[step.name] = experiment_fit(step.temperature_k)
            write_json(folder / "experiment_fit.json", results[step.name])
            _png(folder / "experiment_fit.png")
        if step.action == "validate":
            for kind in ("energy", "forces"):
                _png(folder / f"parity_{kind}.png")
    write_json(root / "summary.json", summarize(config, results, steps))
    write_json(root / "study.json", {"config": json.loads(config.model_dump_json()), "profile": None})
    return root


@pytest.fixture(scope="module")
def series_report(tmp_path_factory) -> Path:
    return write_report(make_series_study(tmp_path_factory.mktemp("series")))


def test_a_temperature_series_gets_a_sigma2_figure_after_the_deciding_ones(series_report):
    text = series_report.read_text()
    sections = re.findall(r"<section[^>]*><h2>([^<]+)</h2>", text)
    assert sections[0] == "Verdict" and "σ² against temperature (corrected nuclei)" in sections
    assert sections.index("σ² against temperature (corrected nuclei)") == sections.index("The figures that decide it") + 1
    root = series_report.parent
    assert (root / "sigma2_vs_t.png").stat().st_size > 10_000
    svg = (root / "sigma2_vs_t.svg").read_text()
    width_in = float(re.search(r'width="([\d.]+)pt"', svg).group(1)) / 72
    assert width_in <= 7.5, f"σ²(T) is {width_in:.1f} in wide: more than a journal page"
    assert not (root / "learning_curve.png").exists()


def test_the_einstein_table_gives_theta_and_offset_per_shell_and_potential(series_report):
    text = series_report.read_text()
    table = text[text.index("σ² against temperature"):]
    table = table[table.index("<table>"): table.index("</table>")]
    assert "<th>W-W1: θ_E / offset</th><th>W-W2: θ_E / offset</th><th>W-W3: θ_E / offset</th>" in table
    assert "<td>chgnet</td><td>250 / 0.00020</td><td>225 / 0.00020</td>" in table  # quantum.py's fit of the synthetic σ²(T)
    assert "<td>sevennet-0</td><td>300 / 0.00020</td>" in table


def test_the_verdict_names_the_series_in_one_sentence_and_ranks_the_pretrained_potentials(series_report):
    verdict = _verdict_html(series_report)
    ratio = {(name, t): harmonic_sigma2(THETA_K[name], t, True) / experiment_fit(t)["shells"]["W-W1"]["sigma2"]
             for name in THETA_K for t in (10.0, 300.0)}
    assert ratio[("chgnet", 300.0)] > 1.15 and ratio[("sevennet-0", 300.0)] < 0.95  # the synthetic bonds differ from the measured one
    assert ("<b>Temperature series</b>: MD at 10 and 300 K (corrected nuclei); Einstein temperature θ_E of W-W1: chgnet 250 K, "
            "sevennet-0 300 K; σ² of W-W1 against the experiment's own (MD / measured): "
            f"chgnet {ratio[('chgnet', 10.0)]:.2f}× at 10 K, {ratio[('chgnet', 300.0)]:.2f}× at 300 K; "
            f"sevennet-0 {ratio[('sevennet-0', 10.0)]:.2f}× at 10 K, {ratio[('sevennet-0', 300.0)]:.2f}× at 300 K "
            "(σ²(T) of each shell below).") in verdict
    assert "Of the pretrained potentials, sevennet-0 agrees best with the experiment</b>: EXAFS R-factor 0.050 at 300 K, against 0.080 for chgnet" in verdict
    assert "No fine-tuning in this study." in verdict and "σ² are quantum" in verdict
    # the #24 table: softening slope, force MAE and first-shell σ² per pretrained model, R-factor per spectrum
    assert "<th>softening slope</th><th>force MAE (eV/Å)</th><th>σ² W-W1 at 300 K (Å²)</th>" in verdict
    assert "<th>EXAFS R-factor at 300 K</th><th>EXAFS R-factor at 10 K</th>" in verdict
    assert "R-factor 0.080 at 300 K (S0² 0.90), 0.110 at 10 K (S0² 0.90)" in verdict


def test_every_measured_temperature_holds_the_md_sigma2_against_the_experiments(series_report):
    text = series_report.read_text()
    section = text[text.index("<h2>σ² against temperature"):]
    table = section[section.index("<th>potential</th><th>T (K)</th>"): section.index("</section>")]
    assert "<th>σ² W-W1: MD / experiment (Å²)</th><th>σ² W-W2: MD / experiment (Å²)</th></tr>" in table  # the fit's shells only
    for name in THETA_K:
        for t in (10.0, 300.0):
            md = harmonic_sigma2(THETA_K[name], t, True)
            measured = experiment_fit(t)["shells"]["W-W1"]
            z = (md - measured["sigma2"]) / np.hypot(0.00005, measured["sigma2_err"])
            bars = "within the error bars" if abs(z) < 1 else f"{abs(z):.1f} error bars {'above' if z > 0 else 'below'}"
            assert (f"<td>{name}</td><td>{t:g}</td><td>{md:.5f} / {measured['sigma2']:.5f} "
                    f"({md / measured['sigma2']:.2f}×, {bars})</td>") in table


def test_the_tables_on_demand_have_a_row_per_temperature(series_report):
    text = series_report.read_text()
    structure = text[text.index("<summary>Structure from MD"):]
    structure = structure[: structure.index("</table>")]
    assert "<th>potential</th><th>T (K)</th>" in structure and structure.count("<td>chgnet</td>") == 2
    assert f"<td>chgnet</td><td>10</td><td>–</td><td>2.7400 / {harmonic_sigma2(THETA_K['chgnet'], 10.0, True):.5f}</td>" in structure
    against = text[text.index("<summary>Each potential against the experiment"):]
    assert "<td>sevennet-0</td><td>10</td><td>0.07</td>" in against and "<h3>The experiment's own shell fit at 10 K</h3>" in against


def test_the_einstein_curve_passes_through_the_sigma2_it_was_fitted_to(series_report):
    view = load_view(series_report.parent)
    series = temperature_series(view)
    assert list(series) == ["chgnet", "sevennet-0"] and list(series["chgnet"]) == [10.0, 300.0]
    for name, points in series.items():
        for shell in SHELLS:
            fit = view.potentials[name]["einstein_k"][shell]
            curve = einstein_curve(view, shell, fit, np.array(list(points)))
            assert curve == pytest.approx([m[shell]["sigma2"] for m in points.values()], rel=2e-3), (name, shell)


def test_a_pristine_only_study_gets_a_verdict_against_the_experiment_and_no_learning_curve(tmp_path):
    root = make_series_study(tmp_path, dataset=None, nuclei="classical")
    text = write_report(root).read_text()
    verdict = _verdict_html(root / "report.html")
    assert "no DFT dataset (pretrained potentials only)" in text
    assert "No DFT dataset in this study: nothing was fine-tuned or validated against DFT" in verdict
    assert "<b>Pretrained chgnet</b> (not validated against DFT: no dataset)." in verdict
    sigma2 = harmonic_sigma2(THETA_K["chgnet"], 300.0, False)
    reference = experiment_fit(300.0)["shells"]["W-W1"]["sigma2"]
    assert f"W-W1 {sigma2:.5f} Å² is {sigma2 / reference:.2f}× the experiment's ({reference:.5f} ± 0.00030 Å²" in verdict
    assert "softening slope" not in verdict and "Recommended" not in verdict and "No training-set size" not in verdict
    assert "lacks zero-point motion" in verdict  # classical nuclei against a measured σ²
    assert "learning curve" not in text and "Parity against held-out DFT" not in text and not (root / "learning_curve.png").exists()
    assert "σ² against temperature (classical nuclei)" in text  # classical σ² only: no open markers, the Einstein fit of classical σ²


@needs_chromium
def test_series_report_shows_the_verdict_on_the_first_screen(series_report, tmp_path):
    layout, pixels = first_screen(series_report, tmp_path)
    _assert_verdict_fills_the_first_screen(layout, pixels)


def test_failed_fits_rank_nothing_and_a_failed_shell_fit_holds_no_md(tmp_path):
    """Pristine only, 300 and 10 K: SevenNet-0's comparison at 300 K (the best R-factor, 0.05) and the experiment's shell
    fit at 300 K are recorded as failed. The ranking is CHGNet's alone, no MD σ² is held against the failed shell fit,
    the experiment's 10 K fit still counts, and the tables say 'failed'."""
    from mlip_exafs.exafs.fit import fit_failure

    root = make_series_study(tmp_path, dataset=None, nuclei="classical")
    summary = json.loads((root / "summary.json").read_text())
    comparison = fit_failure(0.05, ["de0_ev"])
    for entry in (summary["potentials"]["sevennet-0"]["exafs"], summary["potentials"]["sevennet-0"]["by_temperature"]["300"]["exafs"]):
        entry["fit_failed"] = comparison  # as the summary carries compare.json's fit_failed
    shell_fit = fit_failure(0.71, [])
    spectrum = next(s for s in summary["experiment"]["spectra"] if s["temperature_k"] == 300.0)
    spectrum["fit"]["fit_failed"] = shell_fit
    summary["experiment"]["fit"] = spectrum["fit"]
    write_json(root / "summary.json", summary)
    step = next(s for s in build_steps(StudyConfig.model_validate(json.loads((root / "study.json").read_text())["config"]))
                if s.action == "fit_experiment" and s.temperature_k == 300.0)
    write_json(root / "steps" / step.name / "experiment_fit.json", spectrum["fit"])

    text = write_report(root).read_text()
    verdict = _verdict_html(root / "report.html")
    assert "<b>Pretrained chgnet against the experiment</b>: EXAFS R-factor 0.080 at 300 K. The EXAFS fit of sevennet-0 failed at 300 K: not ranked." in verdict
    assert "agrees best" not in verdict
    assert "R-factor 0.070 at 10 K (S0² 0.90). Its EXAFS fit at 300 K failed (de0_ev ended at a fit bound" in verdict
    assert "<b>The experiment's own shell fit at 300 K failed</b> (R-factor 0.71 &gt; 0.5: the fit ends far from the data)" in verdict
    assert "× the experiment's" not in verdict
    assert re.search(r"<td>sevennet-0</td>(<td>[0-9. ±]+</td>){2}<td>failed</td><td>0.07</td></tr>", verdict)  # σ² W-W1, W-W2, R at 300 and 10 K
    assert "<td>experiment (shell fit)</td><td>–</td><td>–</td><td>failed (shell fit)</td><td>0.0186 (shell fit)</td>" in verdict
    assert list(load_view(root).experiment_fits()) == [10.0]  # σ²(T) plots the 10 K fit only
    against = text[text.index("<summary>Each potential against the experiment"):]
    assert "<td>sevennet-0</td><td>300</td><td>failed (0.05)</td>" in against and "<p><b>The fit failed</b>: R-factor 0.71" in against


def test_a_study_without_dataset_or_experiment_says_it_has_nothing_to_judge_by(tmp_path):
    root = make_series_study(tmp_path, dataset=None, nuclei="classical")
    summary = json.loads((root / "summary.json").read_text())
    for potential in summary["potentials"].values():
        potential["exafs"] = None
        for at in potential.get("by_temperature", {}).values():
            at["exafs"] = None
    (root / "summary.json").write_text(json.dumps(summary))
    write_report(root)
    verdict = _verdict_html(root / "report.html")
    assert "without an experiment's EXAFS there is nothing to rank them by" in verdict
    assert "No DFT dataset and no experiment in this study: nothing to judge the potentials by" in verdict
    assert "rests on the experiment alone" not in verdict
