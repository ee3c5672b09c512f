"""Report pieces that need no study run (the full report is tested in test_study)."""

from mlip_exafs.report import _gallery, _overview, first_seed_only


def overview_of(recommended_n):
    curve = [
        {"n": 1, "seed": 0, "force_mae_ev_a": 0.30, "softening_slope": 0.85},
        {"n": 10, "seed": 0, "force_mae_ev_a": 0.20, "softening_slope": 0.96},
        {"n": 10, "seed": 1, "force_mae_ev_a": 0.18, "softening_slope": 0.94},
    ]
    summary = {"study": "s", "learning_curve": curve, "recommended_n": recommended_n, "recommended_n_rule": "rule"}
    record = {"config": {"dataset": "ws2", "structure": "ws2", "absorber": "W"}, "profile": "quick"}
    return _overview(summary, record)


def test_overview_without_a_recommendation_says_where_the_largest_n_stands():
    text = overview_of(None)
    assert "No N met the criteria" in text
    assert "largest N (10, mean of 2 seed(s))" in text
    assert "slope is 0.950" in text and "force MAE 0.190 eV/Å" in text


def test_overview_with_a_recommendation_names_it():
    text = overview_of(10)
    assert "Recommended training-set size: N = 10" in text
    assert "largest N" not in text


def test_galleries_show_the_pristine_models_and_the_first_seed_of_each_n(tmp_path):
    names = ["validate-chgnet", "validate-chgnet-ft-n1-s0", "validate-chgnet-ft-n1-s1", "validate-chgnet-ft-n10-s1",
             "validate-chgnet-ft-n10-s0", "validate-chgnet-ft-n10-s2", "validate-sevennet-0"]
    folders = [tmp_path / name for name in names]
    shown = [f.name for f in first_seed_only(folders)]
    assert shown == ["validate-chgnet", "validate-chgnet-ft-n1-s0", "validate-chgnet-ft-n10-s0", "validate-sevennet-0"]


def test_a_gallery_says_where_the_other_seeds_plots_are(tmp_path):
    from matplotlib import pyplot as plt

    for name in ["validate-chgnet-ft-n1-s0", "validate-chgnet-ft-n1-s1"]:
        (tmp_path / name).mkdir()
        plt.figure(figsize=(1, 1)).savefig(tmp_path / name / "parity_forces.png")
    plt.close("all")
    html_text = _gallery(tmp_path, "validate-")
    assert html_text.count("<img") == 1 and "chgnet-ft-n1-s0: parity forces" in html_text
    assert "other seeds" in html_text


def test_msrd_table_shows_the_temperature_each_md_ran_at(tmp_path):
    from mlip_exafs.files import write_json
    from mlip_exafs.report import _msrd_table

    shells = {"W-S1": {"r_mean": 2.41, "sigma2": 0.00369}}
    summary = {"potentials": {"chgnet": {"msrd": shells}, "sevennet-0": {"msrd": shells}, "chgnet-ft-n1-s0": {"msrd": None}}}
    (tmp_path / "md-chgnet").mkdir()
    write_json(tmp_path / "md-chgnet" / "md.json", {"production_temperature_k": {"mean": 305.31, "std": 13.59}})
    text = _msrd_table(summary, tmp_path)
    assert "<td>305.3 ± 13.6</td>" in text  # from md.json
    assert text.count("<tr>") == 3  # header + the two potentials with an MD; sevennet-0 has no md.json: "–"
    assert "2.4100 / 0.00369" in text and "chgnet-ft-n1-s0" not in text


def test_galleries_and_cost_table_order_n_as_numbers(tmp_path):
    from matplotlib import pyplot as plt

    from mlip_exafs.files import write_json
    from mlip_exafs.report import _cost_table

    for name, wall in [("finetune-chgnet-ft-n10-s0", 368.9), ("finetune-chgnet-ft-n100-s0", 22159.0), ("finetune-chgnet-ft-n2-s0", 4.04)]:
        (tmp_path / name).mkdir()
        plt.figure(figsize=(1, 1)).savefig(tmp_path / name / "training_curve.png")
        write_json(tmp_path / name / "step.json", {"step": name, "wall_s": wall})
    plt.close("all")
    gallery = _gallery(tmp_path, "finetune-")
    assert gallery.index("ft-n2-s0") < gallery.index("ft-n10-s0") < gallery.index("ft-n100-s0")
    cost = _cost_table(tmp_path)
    assert cost.index("ft-n2-s0") < cost.index("ft-n10-s0") < cost.index("ft-n100-s0")
    assert "<td>22159</td>" in cost and "<td>4.0</td>" in cost and "22532 (6.26 h)" in cost


def test_exafs_of_all_potentials_share_one_figure(tmp_path):
    import numpy as np

    from mlip_exafs.files import write_json
    from mlip_exafs.report import _exafs_overlay

    k = np.arange(0.05, 18, 0.05)
    for name, sigma2 in [("exafs-chgnet", 0.006), ("exafs-chgnet-ft-n10-s0", 0.003), ("exafs-chgnet-ft-n10-s1", 0.003)]:
        folder = tmp_path / "steps" / name
        folder.mkdir(parents=True)
        chi = np.sin(2 * k * 2.4) * np.exp(-2 * sigma2 * k**2) / k
        (folder / "chi.csv").write_text("k,chi\n" + "\n".join(f"{a},{b}" for a, b in zip(k, chi)))
        write_json(folder / "exafs.json", {"settings": {"ft": {"kmin_inv_a": 3.0, "kmax_inv_a": 14.0, "dk_inv_a": 1.0, "kweight": 2}}})
    text = _exafs_overlay(tmp_path)
    assert text.count("<img") == 1 and (tmp_path / "exafs_models.png").stat().st_size > 10_000


def test_experiment_and_every_potential_share_one_figure(tmp_path):
    import numpy as np

    from mlip_exafs.files import write_json
    from mlip_exafs.report import _experiment_overlay

    k = np.arange(0.0, 16, 0.05)
    for name, sigma2 in [("compare-chgnet", 0.006), ("compare-chgnet-ft-n10-s0", 0.003)]:
        folder = tmp_path / "steps" / name
        folder.mkdir(parents=True)
        exp, model = np.sin(5.5 * k) * np.exp(-0.008 * k**2), np.sin(5.5 * k) * np.exp(-2 * sigma2 * k**2)
        (folder / "fitted.csv").write_text("k,chi_experiment,chi_model\n" + "".join(f"{a},{b},{c}\n" for a, b, c in zip(k, exp, model)))
        write_json(folder / "compare.json", {"kmin": 3.0, "kmax": 14.0, "kweight": 2, "settings": {"dk_inv_a": 1.0}})
    assert _experiment_overlay(tmp_path).count("<img") == 1
    assert (tmp_path / "exafs_experiment.png").stat().st_size > 10_000
