"""Spectrum headers: the absorber and edge a file names, the defaults, and theory against data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlip_exafs.errors import UserError
from mlip_exafs.exafs import theory_absorber_edge
from mlip_exafs.spectra import absorber_and_edge, spectrum_header

REPO = Path(__file__).resolve().parents[1]
W_FOIL = REPO / "examples" / "data" / "W_metal_rt_01.xdi"
SHARED = Path("/work/shared/data/exafs")  # the other real spectra (Sr K, As K), where this machine has them


@pytest.mark.parametrize(
    "name, expected",
    [("W_metal_rt_01.xdi", ("W", "L3")), ("SrTiO3_rt_01.xdi", ("Sr", "K")), ("as2s3_roomt_scan1.xdi", ("As", "K"))],
)
def test_xdi_header_names_element_and_edge(name, expected):
    path = W_FOIL if name == W_FOIL.name else SHARED / name
    if not path.exists():
        pytest.skip(f"{path} is not on this machine")
    assert spectrum_header(path) == expected
    assert absorber_and_edge(path) == expected  # no --absorber/--edge needed


def test_athena_project_header(tmp_path):
    """An Athena project written by larch: the element from the background group, the edge from its E0."""
    from larch.io import read_xdi
    from larch.io.athena_project import AthenaProject

    xdi = read_xdi(str(W_FOIL))
    xdi.mu = np.log(xdi.i0 / xdi.itrans)
    project = AthenaProject()
    project.add_group(xdi)
    project.save(str(tmp_path / "w.prj"))
    assert spectrum_header(tmp_path / "w.prj") == ("W", "L3")


def test_columns_have_no_header_and_fall_back_to_the_theory_then_the_default_edge(tmp_path):
    columns = tmp_path / "chi.txt"
    np.savetxt(columns, np.column_stack([np.arange(0.5, 15, 0.05), np.zeros(290)]))
    assert spectrum_header(columns) == (None, None)
    assert absorber_and_edge(columns, theory=("Cu", "K")) == ("Cu", "K")
    assert absorber_and_edge(columns, absorber="Cu") == ("Cu", "K")
    assert absorber_and_edge(columns, absorber="Pt") == ("Pt", "L3")
    with pytest.raises(UserError, match="does not name its element .* give --absorber"):
        absorber_and_edge(columns)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(theory=("Cu", "K")), "the theory is Cu K .exafs.json. but the spectrum is W L3"),
        (dict(absorber="Cu"), "is a W L3 spectrum .its header. but --absorber is Cu"),
        (dict(edge="K"), "but --edge is K"),
    ],
    ids=["theory-differs", "absorber-differs", "edge-differs"],
)
def test_theory_or_options_against_the_header_are_refused(kwargs, message):
    with pytest.raises(UserError, match=message) as err:
        absorber_and_edge(W_FOIL, **kwargs)
    assert "\n" not in str(err.value)


def test_theory_absorber_edge_from_exafs_json(tmp_path):
    assert theory_absorber_edge(tmp_path / "chi.csv") == (None, None)
    (tmp_path / "exafs.json").write_text(json.dumps({"absorber": "Cu", "edge": "K", "settings": {"absorber": "Cu", "edge": "K"}}))
    assert theory_absorber_edge(tmp_path / "chi.csv") == ("Cu", "K") == theory_absorber_edge(tmp_path)
    old = tmp_path / "old"
    old.mkdir()
    (old / "exafs.json").write_text(json.dumps({"settings": {"absorber": "W", "edge": "L3"}}))  # written before #28
    assert theory_absorber_edge(old) == ("W", "L3")


def test_given_e0_sets_k_zero():
    from mlip_exafs.spectra import read_experiment

    auto = read_experiment(W_FOIL, "W", "L3")
    given = read_experiment(W_FOIL, "W", "L3", e0_ev=auto.e0_ev + 5.0)
    assert given.e0_ev == auto.e0_ev + 5.0
    assert not np.allclose(given.chi[100:200], auto.chi[100:200])  # the k scale moved
