"""Report pieces that need no study run (the full report is tested in test_study)."""

from mlip_exafs.report import _overview


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
