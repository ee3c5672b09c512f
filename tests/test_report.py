"""The report: its verdict on a synthetic study folder, its pieces, and both bundled studies' reports in headless Chromium."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mlip_exafs.files import write_json
from mlip_exafs.report import StudyView, _gallery, _learning_curve_table, _recommendation, first_seed_only, write_report
from mlip_exafs.study.steps import Step

REPO = Path(__file__).resolve().parents[1]
VERDICT_GREEN = (0x22, 0xAA, 0x66)  # the verdict box's border, #2a6


def view_of(recommended_n, curve=None):
    curve = curve or [
        {"n": 1, "seed": 0, "force_mae_ev_a": 0.30, "softening_slope": 0.85},
        {"n": 10, "seed": 0, "force_mae_ev_a": 0.20, "softening_slope": 0.96},
        {"n": 10, "seed": 1, "force_mae_ev_a": 0.18, "softening_slope": 0.94},
    ]
    summary = {"study": "s", "potentials": {}, "learning_curve": curve, "recommended_n": recommended_n, "recommended_n_rule": "rule"}
    record = {"config": {"dataset": "ws2", "structure": "ws2", "absorber": "W", "finetune": {"base": "chgnet"}}, "profile": "quick"}
    return StudyView(Path("."), summary, record)


def test_without_a_recommendation_the_verdict_says_where_the_largest_n_stands():
    text = _recommendation(view_of(None))
    assert "No training-set size met the criteria" in text
    assert "largest N (10, mean of 2 seed(s))" in text
    assert "slope is 0.950" in text and "force MAE 0.190 eV/Å" in text


def test_the_learning_curve_table_gives_mean_and_spread_over_seeds():
    text = _learning_curve_table(view_of(10))
    assert "mean ± std over seeds" in text and "<td>1</td><td>1</td><td>0.3 ± 0</td><td>0.85 ± 0</td>" in text
    assert "<td>10</td><td>2</td><td>0.19 ± 0.014</td><td>0.95 ± 0.014</td>" in text  # sample std of 0.18 and 0.20


def test_a_recommendation_names_n_the_base_model_and_whether_it_is_the_largest_n():
    assert "fine-tune chgnet on N = 10 DFT-labelled structures" in _recommendation(view_of(10))
    assert "largest N tried" in _recommendation(view_of(10))
    assert "largest N tried" not in _recommendation(view_of(1))


def _step(action: str, potential: str, n: int | None = None, seed: int | None = None, temperature_k: float | None = None) -> Step:
    """A step record as the pipeline makes it; its folder name says nothing the report reads."""
    tag = "" if temperature_k in (None, 300.0) else f"@{temperature_k:g}K"
    return Step(f"{action}{tag}-{potential}", action, potential=potential, n=n, seed=seed, temperature_k=temperature_k)


def _finetuned(action: str, n: int, seed: int, **kwargs) -> Step:
    return _step(action, f"chgnet-ft-n{n}-s{seed}", n, seed, **kwargs)


def view_with(folder: Path, steps: list[Step], potentials: dict | None = None) -> StudyView:
    summary = {"study": "s", "potentials": potentials or {}, "learning_curve": [], "recommended_n": None}
    return StudyView(folder, summary, {"config": {"absorber": "W", "md": {"nuclei": "classical"}}}, steps)


def test_galleries_show_the_pristine_models_and_the_first_seed_of_each_n():
    steps = [_step("validate", "chgnet"), _finetuned("validate", 1, 0), _finetuned("validate", 1, 1), _finetuned("validate", 10, 1),
             _finetuned("validate", 10, 0), _finetuned("validate", 10, 2), _step("validate", "sevennet-0")]
    shown = [s.potential for s in first_seed_only(steps)]
    assert shown == ["chgnet", "chgnet-ft-n1-s0", "chgnet-ft-n10-s0", "sevennet-0"]


def test_a_gallery_says_where_the_other_seeds_plots_are(tmp_path):
    steps = [_finetuned("validate", 1, 0), _finetuned("validate", 1, 1)]
    for step in steps:
        _png(tmp_path / "steps" / step.name / "parity_forces.png")
    html_text = _gallery(view_with(tmp_path, steps), "validate")
    assert html_text.count("<img") == 1 and "chgnet-ft-n1-s0: parity forces" in html_text
    assert "other seeds" in html_text


def test_msrd_table_shows_the_temperature_each_md_ran_at(tmp_path):
    from mlip_exafs.report import _msrd_table

    shells = {"W-S1": {"r_mean": 2.41, "sigma2": 0.00369}}
    potentials = {"chgnet": {"msrd": shells}, "sevennet-0": {"msrd": shells}, "chgnet-ft-n1-s0": {"msrd": None}}
    steps = [_step(a, p, temperature_k=300.0) for p in ("chgnet", "sevennet-0") for a in ("md", "analyze")]
    steps += [_finetuned(a, 1, 0, temperature_k=300.0) for a in ("md", "analyze")]
    write_json(tmp_path / "steps" / "md-chgnet" / "md.json", {"production_temperature_k": {"mean": 305.31, "std": 13.59}})
    text = _msrd_table(view_with(tmp_path, steps, potentials))
    assert "<td>305.3 ± 13.6</td>" in text  # from md.json
    assert text.count("<tr>") == 3  # header + the two potentials with an MD; sevennet-0 has no md.json: "–"
    assert "2.4100 / 0.00369" in text and "chgnet-ft-n1-s0" not in text


def test_galleries_and_cost_table_follow_the_step_records_not_the_folders(tmp_path):
    """N in the pipeline's order (2, 10, 100: not 10, 100, 2 as names sort); a folder the study does not define is not shown."""
    from mlip_exafs.report import _cost_table

    steps = [_finetuned("finetune", n, 0) for n in (2, 10, 100)]
    for step, wall in zip(steps + [_finetuned("finetune", 7, 0)], (4.04, 368.9, 22159.0, 1.0)):
        _png(tmp_path / "steps" / step.name / "training_curve.png")
        write_json(tmp_path / "steps" / step.name / "step.json", {"step": step.name, "wall_s": wall})
    view = view_with(tmp_path, steps)
    gallery = _gallery(view, "finetune")
    assert gallery.index("ft-n2-s0") < gallery.index("ft-n10-s0") < gallery.index("ft-n100-s0") and "ft-n7" not in gallery
    cost = _cost_table(view)
    assert cost.index("ft-n2-s0") < cost.index("ft-n10-s0") < cost.index("ft-n100-s0") and "ft-n7" not in cost
    assert "<td>22159</td>" in cost and "<td>4.0</td>" in cost and "22532 (6.26 h)" in cost


def test_exafs_of_all_potentials_share_one_figure(tmp_path):
    from mlip_exafs.report import _exafs_overlay

    k = np.arange(0.05, 18, 0.05)
    steps = [_step("exafs", "chgnet", temperature_k=300.0)] + [_finetuned("exafs", 10, seed, temperature_k=300.0) for seed in (0, 1)]
    for step, sigma2 in zip(steps, (0.006, 0.003, 0.003)):
        folder = tmp_path / "steps" / step.name
        folder.mkdir(parents=True)
        chi = np.sin(2 * k * 2.4) * np.exp(-2 * sigma2 * k**2) / k
        (folder / "chi.csv").write_text("k,chi\n" + "\n".join(f"{a},{b}" for a, b in zip(k, chi)))
        write_json(folder / "exafs.json", {"settings": {"ft": {"kmin_inv_a": 3.0, "kmax_inv_a": 14.0, "dk_inv_a": 1.0, "kweight": 2}}})
    text = _exafs_overlay(view_with(tmp_path, [_step("md", "chgnet", temperature_k=300.0), *steps]))
    assert text.count("<img") == 1 and (tmp_path / "exafs_models.png").stat().st_size > 10_000


def test_experiment_and_every_potential_share_one_figure(tmp_path):
    from mlip_exafs.report import _experiment_overlay

    k = np.arange(0.0, 16, 0.05)
    steps = [_step("compare", "chgnet", temperature_k=300.0), _finetuned("compare", 10, 0, temperature_k=300.0)]
    for step, sigma2 in zip(steps, (0.006, 0.003)):
        folder = tmp_path / "steps" / step.name
        folder.mkdir(parents=True)
        exp, model = np.sin(5.5 * k) * np.exp(-0.008 * k**2), np.sin(5.5 * k) * np.exp(-2 * sigma2 * k**2)
        (folder / "fitted.csv").write_text("k,chi_experiment,chi_model\n" + "".join(f"{a},{b},{c}\n" for a, b, c in zip(k, exp, model)))
        write_json(folder / "compare.json", {"kmin": 3.0, "kmax": 14.0, "kweight": 2, "settings": {"dk_inv_a": 1.0}})
    assert _experiment_overlay(view_with(tmp_path, [_step("md", "chgnet", temperature_k=300.0), *steps]), 300.0).count("<img") == 1
    assert (tmp_path / "exafs_experiment.png").stat().st_size > 10_000


# ---------------------------------------------------------------- a whole report from a synthetic study folder

def _validation(slope: float, force_mae: float) -> dict:
    return {"energy_mae_mev_atom": 10.0, "force_mae_ev_a": force_mae, "force_rmse_ev_a": 1.4 * force_mae, "stress_mae_gpa": 0.5,
            "softening_slope": slope, "cmae_ev_a": force_mae, "n_test_structures": 10}


def _msrd(sigma2_w1: float, sigma2_w2: float) -> dict:
    return {"W-W1": {"r_mean": 2.744, "sigma2": sigma2_w1}, "W-W2": {"r_mean": 3.168, "sigma2": sigma2_w2}, "W-W3": {"r_mean": 4.48, "sigma2": 0.008}}


FIT = {"s02": 0.94, "de0_ev": 4.7, "r_factor": 0.0186, "kmin": 3.0, "kmax": 14.0, "rmin": 1.0, "rmax": 3.98, "n_variables": 6, "n_independent": 21.8,
       "shells": {"W-W1": {"r": 2.7398, "r_err": 0.004, "sigma2": 0.00314, "sigma2_err": 0.00035, "n": 8.0},
                  "W-W2": {"r": 3.1626, "r_err": 0.006, "sigma2": 0.00360, "sigma2_err": 0.00050, "n": 6.0}}}


def _png(path: Path) -> None:
    from matplotlib import pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig = plt.figure(figsize=(2, 2))
    fig.gca().plot([0, 1], [0, 1])
    fig.savefig(path)
    plt.close(fig)


SYNTHETIC_CONFIG = {"name": "w-synthetic", "structure": "w-bcc", "absorber": "W", "dataset": "w-bcc", "pristine": ["chgnet", "sevennet-0"],
                    "finetune": {"base": "chgnet", "n": [1, 10, 40], "seeds": [0, 1]}, "md": {"finetuned_n": [10, 40]},
                    "experiment": {"file": "/data/W_metal_rt_01.xdi"}}


def make_study(root: Path, unfinished_md: bool = True) -> Path:
    """A W study as the pipeline leaves it: pretrained CHGNet (MD) and SevenNet-0 (MD unfinished), N = 1, 10, 40 x 2 seeds
    (MD at N = 10 and 40), the W-foil shell fit. Numbers are those of studies/w-paper, rounded."""
    steps = root / "steps"
    potentials = {"chgnet": {"validation": _validation(0.51, 0.629), "msrd": _msrd(0.00641, 0.00734),
                             "exafs": {"r_factor_r": 0.132, "r_factor_k": 0.19, "s02": 1.53, "de0_ev": 3.8, "kmin": 3, "kmax": 14, "rmin": 1, "rmax": 5}},
                  "sevennet-0": {"validation": _validation(0.58, 0.567), "msrd": None, "exafs": None}}
    curve = []
    for n, slope, mae in ((1, 0.79, 0.32), (10, 0.998, 0.104), (40, 1.016, 0.0905)):
        for seed in (0, 1):
            curve.append({"n": n, "seed": seed, "force_mae_ev_a": mae, "softening_slope": slope})
            name = f"chgnet-ft-n{n}-s{seed}"
            md = seed == 0 and n in (10, 40)
            potentials[name] = {"validation": _validation(slope, mae), "msrd": _msrd(0.00316, 0.00308) if md else None,
                                "exafs": {"r_factor_r": 0.012, "r_factor_k": 0.03, "s02": 0.9, "de0_ev": 4.4, "kmin": 3, "kmax": 14, "rmin": 1, "rmax": 5} if md else None}
    summary = {"study": "w-synthetic", "potentials": potentials, "learning_curve": curve, "recommended_n": 40, "recommended_n_rule": "the rule in words",
               "experiment": {"file": "/data/W_metal_rt_01.xdi", "fit": FIT}}
    if unfinished_md:
        summary["unfinished_steps"] = ["md-sevennet-0", "analyze-sevennet-0"]
    write_json(root / "summary.json", summary)
    write_json(root / "study.json", {"config": SYNTHETIC_CONFIG, "profile": "paper"})
    for name, entry in potentials.items():
        for kind in ("energy", "forces", "stress"):
            _png(steps / f"validate-{name}" / f"parity_{kind}.png")
        if entry["msrd"]:
            shells = [{"label": s, "sigma2": v["sigma2"], "sigma2_err": 0.00004} for s, v in entry["msrd"].items()]
            write_json(steps / f"analyze-{name}" / "analysis.json", {"trajectories": [{"shells": shells}]})
    _png(steps / "fit-experiment" / "experiment_fit.png")
    write_json(steps / "fit-experiment" / "experiment_fit.json", FIT)
    return root


@pytest.fixture(scope="module")
def synthetic_report(tmp_path_factory) -> Path:
    root = make_study(tmp_path_factory.mktemp("study"))
    return write_report(root)


def _verdict_html(report: Path) -> str:
    text = report.read_text()
    return text[text.index("<section id='verdict'>"): text.index("</section>")]


def test_the_verdict_is_the_first_section_and_answers_in_sentences(synthetic_report):
    text = synthetic_report.read_text()
    assert text.index("<section id='verdict'>") < text.index("<section", text.index("<body>") + 1) + 1  # the first section
    verdict = _verdict_html(synthetic_report)
    assert "Recommended: fine-tune chgnet on N = 40 DFT-labelled structures." in verdict and "the rule in words" in verdict
    assert "Pretrained chgnet is too soft</b>: softening slope 0.51" in verdict and "force MAE 0.629 eV/Å" in verdict
    # σ² against the experiment's fit: ratio and the difference in combined error bars
    expected_z = (0.00641 - 0.00314) / np.hypot(0.00004, 0.00035)
    assert f"W-W1 0.00641 Å² is 2.04× the experiment's (0.00314 ± 0.00035 Å², {expected_z:.1f} error bars above)" in verdict
    assert "R-factor 0.132" in verdict and "Fine-tuned on N = 10</b> (seed 0): as stiff as DFT" in verdict
    assert "within the error bars" in verdict  # N = 10's W-W1 σ² 0.00316 against 0.00314 ± 0.00035
    assert "Pretrained sevennet-0 is too soft" in verdict and "Its MD is still running." in verdict
    assert "Unfinished steps" in verdict and "md-sevennet-0" in verdict
    assert "σ²(W-W1) 0.00314 ± 0.00035 Å² at 2.740 Å (N = 8)" in verdict


def test_the_learning_curve_table_starts_from_the_pretrained_base_model(synthetic_report):
    text = synthetic_report.read_text()
    table = text[text.index("Learning curve against held-out DFT"):]
    table = table[:table.index("</table>")]
    assert "<td>0 (pretrained chgnet)</td><td>–</td><td>0.629</td><td>0.51</td>" in table
    assert "<td>40</td><td>2</td><td>0.0905 ± 0</td><td>1.016 ± 0</td>" in table


def test_without_an_experiment_the_sigma2_caption_promises_no_band(tmp_path):
    root = make_study(tmp_path)
    summary = json.loads((root / "summary.json").read_text())
    del summary["experiment"]
    write_json(root / "summary.json", summary)
    text = write_report(root).read_text()
    assert "σ² per shell vs N: fine-tuned MDs (points), pretrained (lines)'" in text and "shell fit (band)" not in text


def test_the_deciding_figures_come_as_png_and_svg(synthetic_report):
    assert "pretrained (lines), experiment&#x27;s shell fit (band)" in synthetic_report.read_text()
    root = synthetic_report.parent
    for stem in ("learning_curve", "sigma2_vs_n", "r_factor_vs_n"):
        assert (root / f"{stem}.png").stat().st_size > 5_000, stem
        svg = (root / f"{stem}.svg").read_text()
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg, stem
        width_in = float(re.search(r'width="([\d.]+)pt"', svg).group(1)) / 72
        assert width_in <= 7.5, f"{stem} is {width_in:.1f} in wide: more than a journal page"


def test_parity_plots_of_pretrained_and_largest_n_shown_the_others_on_demand(synthetic_report):
    text = synthetic_report.read_text()
    section = text[text.index("Parity against held-out DFT"):]
    shown, collapsed = section.split("<details>", 1)
    assert {"chgnet: parity forces", "sevennet-0: parity forces", "chgnet-ft-n40-s0: parity forces"} <= set(re.findall(r"alt='([^']+)'", shown))
    assert "chgnet-ft-n1-s0: parity forces" in collapsed.split("</details>")[0] and "ft-n1-s0" not in shown
    assert "s1: parity" not in text  # other seeds: numbers in the tables only
    assert text.count("<details>") >= 4 and "Provenance" in text.split("<details>")[-1]


def test_report_of_a_study_without_summary_is_built_from_its_finished_steps(tmp_path):
    """An unfinished study (no summary.json, a step without step.json) reports what is done and names the rest."""
    import yaml

    from conftest import run_cli

    config = {"name": "partial", "structure": "ws2", "absorber": "W", "dataset": "ws2", "pristine": ["chgnet"],
              "finetune": {"n": [1], "seeds": [0]}, "md": {"finetuned_n": []}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    from mlip_exafs.study.config import load_study_config
    from mlip_exafs.study.pipeline import build_steps
    from mlip_exafs.study.steps import all_hashes

    loaded = load_study_config(tmp_path / "c.yaml")
    steps = build_steps(loaded)
    hashes = all_hashes(steps)
    write_json(tmp_path / "study.json", {"config": json.loads(loaded.model_dump_json()), "profile": None, "step_inputs": hashes})
    for step in steps:
        if step.action == "validate" or step.action == "finetune":
            result = {"model": "m.pt", "n": 1, "seed": 0} if step.action == "finetune" else _validation(0.6 if step.name == "validate-chgnet" else 0.99, 0.2)
            write_json(tmp_path / "steps" / step.name / "step.json", {"step": step.name, "inputs_hash": hashes[step.name], "wall_s": 1.0, "result": result})
    run_cli("report", str(tmp_path), check=True)
    verdict = _verdict_html(tmp_path / "report.html")
    assert "Pretrained chgnet is too soft" in verdict and "Its MD is still running." in verdict
    assert "md-chgnet" in verdict and not (tmp_path / "summary.json").exists()


# ---------------------------------------------------------------- in a browser

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (scripts/install.sh --test installs it)")
SCREEN = (1400, 900)


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                           "--no-first-run", "--hide-scrollbars", f"--user-data-dir={tmp / 'profile'}", f"--window-size={SCREEN[0]},{SCREEN[1]}",
                           "--virtual-time-budget=5000", *args], capture_output=True, text=True, timeout=180)


def first_screen(report: Path, tmp: Path) -> tuple[dict, np.ndarray]:
    """Where the page's sections sit in a 1400x900 window (from the DOM), and the screenshot of that window (RGB array)."""
    from PIL import Image

    probe = tmp / "probe.html"
    script = ("<script>window.onload=()=>{const s=[...document.querySelectorAll('section')].map(e=>{const r=e.getBoundingClientRect();"
              "return {id:e.id,top:r.top,bottom:r.bottom};});const imgs=[...document.images];"
              "document.title=JSON.stringify({sections:s,broken:imgs.filter(i=>!(i.complete&&i.naturalWidth>0)).length,images:imgs.length});}</script>")
    probe.write_text(report.read_text().replace("</body>", script + "</body>"))
    dom = _chromium(tmp, "--dump-dom", probe.as_uri())
    layout = json.loads(__import__("html").unescape(dom.stdout.split("<title>")[1].split("</title>")[0]))
    shot = tmp / "screen.png"
    _chromium(tmp, f"--screenshot={shot}", report.as_uri())
    return layout, np.asarray(Image.open(shot).convert("RGB"))


def _assert_verdict_fills_the_first_screen(layout: dict, pixels: np.ndarray) -> None:
    assert pixels.shape[:2] == (SCREEN[1], SCREEN[0])
    first = layout["sections"][0]
    assert first["id"] == "verdict", layout["sections"][:2]
    assert first["top"] < 200 and first["bottom"] <= SCREEN[1], first  # the whole verdict is on the first screen
    green = np.all(np.abs(pixels.astype(int) - VERDICT_GREEN) <= 12, axis=-1)
    rows = np.flatnonzero(green.sum(axis=1) > SCREEN[0] // 2)  # the verdict box's top and bottom borders, drawn across the page
    assert len(rows) >= 2 and rows[0] < 200, "the verdict box is not on the screenshot"
    assert layout["broken"] == 0


@needs_chromium
def test_synthetic_report_shows_the_verdict_on_the_first_screen(synthetic_report, tmp_path):
    layout, pixels = first_screen(synthetic_report, tmp_path)
    _assert_verdict_fills_the_first_screen(layout, pixels)


@needs_chromium
@pytest.mark.parametrize("study", ["ws2-paper", "w-paper"])
def test_bundled_study_reports_show_the_verdict_on_the_first_screen(study, tmp_path):
    report = REPO / "studies" / study / "report.html"
    if not report.exists():
        pytest.skip(f"{report} not in this checkout")
    layout, pixels = first_screen(report, tmp_path)
    _assert_verdict_fills_the_first_screen(layout, pixels)
    assert layout["images"] >= 5


# ---------------------------------------------------------------- failed fits (docs/robustness.md, Failed fits)

def test_a_failed_fit_shows_as_failed_and_its_r_factor_decides_nothing(tmp_path):
    """A comparison recorded as failed (here pretrained CHGNet's: S0² at a bound, with a deceptively low R) reads 'failed' in the
    verdict table and sentence, is left out of the R-factor figure, and keeps its numbers for diagnosis in the tables on demand."""
    from mlip_exafs.exafs.fit import fit_failure

    root = make_study(tmp_path, unfinished_md=False)
    summary = json.loads((root / "summary.json").read_text())
    stuck = fit_failure(0.045, ["s02"])
    far = fit_failure(0.93, [])
    summary["potentials"]["chgnet"]["exafs"] |= {"r_factor_r": 0.045, "s02": 3.0, "fit_failed": stuck}
    summary["potentials"]["chgnet-ft-n40-s0"]["exafs"] |= {"r_factor_r": 0.93, "fit_failed": far}
    write_json(root / "summary.json", summary)
    text = write_report(root).read_text()
    verdict = _verdict_html(root / "report.html")

    table = verdict[verdict.index("<table>"):]
    rows = {re.search(r"<td>([^<]+)</td>", row).group(1): row for row in table.split("<tr>")[2:]}
    assert rows["chgnet"].endswith("<td>failed</td></tr>") and rows["chgnet-ft-n40-s0"].endswith("<td>failed</td></tr>")
    assert rows["chgnet-ft-n10-s0"].endswith("<td>0.012</td></tr>")  # a good fit keeps its number
    assert "Its EXAFS fit against the experiment failed (s02 ended at a fit bound: no minimum inside the bounds): no R-factor" in verdict
    assert "(R-factor 0.93 &gt; 0.5: the fit ends far from the data)" in verdict
    assert "0.045" not in verdict and "0.930" not in verdict and "R-factor 0.93 " not in verdict.replace("R-factor 0.93 &gt;", "")
    assert "failed fits left out" in text  # the R-factor vs N figure

    on_demand = text[text.index("<summary>Each potential against the experiment"):]
    assert "<td>chgnet</td><td>failed (0.045)</td>" in on_demand and "<td>chgnet-ft-n40-s0</td><td>failed (0.93)</td>" in on_demand
    assert f"chgnet: {stuck}" in on_demand.replace("&#x27;", "'")  # the whole reason, advice included


def test_when_a_smaller_n_passes_dft_but_has_no_md_exafs_the_rule_and_verdict_say_so():
    """The W paper study: N = 20 passes the DFT criteria, MD-EXAFS ran for N = 10 and 40 only, 10 misses the force
    criterion: 40 is recommended, because of the EXAFS criterion's scope, not because the curve has not flattened."""
    from mlip_exafs.study.config import StudyConfig
    from mlip_exafs.study.pipeline import recommend

    config = StudyConfig(name="w", structure="w-bcc", absorber="W", dataset="w-bcc", finetune={"n": [10, 20, 40], "seeds": [0]},
                         md={"finetuned_n": [10, 40]}, experiment=[{"file": "w.xdi", "temperature_k": 300}])
    rows = [{"n": 10, "seed": 0, "force_mae_ev_a": 0.20, "softening_slope": 0.90},
            {"n": 20, "seed": 0, "force_mae_ev_a": 0.095, "softening_slope": 1.00},
            {"n": 40, "seed": 0, "force_mae_ev_a": 0.090, "softening_slope": 1.00}]
    potentials = {"chgnet": {"exafs": {"r_factor_r": 0.13}}, "chgnet-ft-n10-s0": {"exafs": {"r_factor_r": 0.012}},
                  "chgnet-ft-n40-s0": {"exafs": {"r_factor_r": 0.012}}}
    n, rule = recommend(config, potentials, rows)
    assert n == 40 and "N = 20 already passes the DFT criteria but has no MD-EXAFS" in rule
    text = _recommendation(view_of(40, rows))
    assert "N = 40" in text and "largest N tried" not in text


def test_a_summary_of_other_steps_is_not_taken_as_current(tmp_path):
    """A rerun with a changed config rewrites study.json at its start and summary.json at its end: meanwhile the old
    summary is not the study's (the report then reads the finished steps)."""
    from mlip_exafs.files import write_json
    from mlip_exafs.study.pipeline import SUMMARY_STEPS_KEY, steps_digest, summary_is_current

    write_json(tmp_path / "study.json", {"config": {}, "step_inputs": {"md-chgnet": "new"}})
    assert summary_is_current(tmp_path, {SUMMARY_STEPS_KEY: steps_digest({"md-chgnet": "new"})})
    assert not summary_is_current(tmp_path, {SUMMARY_STEPS_KEY: steps_digest({"md-chgnet": "old"})})
    assert summary_is_current(tmp_path, {})  # written before summaries said which steps they summarize
