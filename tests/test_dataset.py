"""The shipped CP2K datasets: addressable by name, one level of theory, test held out."""

import json

import pytest

from conftest import run_cli
from mlip_exafs.dataset import assert_disjoint, load_structures
from mlip_exafs.cp2k import Cp2kSettings


@pytest.mark.parametrize("name, composition", [("ws2", "S36W18"), ("w-bcc", "W16")])
def test_shipped_dataset_info_names_counts_code_and_settings(name, composition):
    info = json.loads(run_cli("dataset", "info", name, "--json", check=True).stdout)
    assert info["n_train"] >= 10 and info["n_test"] >= 3  # the quick studies fine-tune on up to 10
    assert info["n_train_not_converged"] == 0 and info["n_test_not_converged"] == 0
    assert info["dft_code"] == {"name": "CP2K", "version": "2023.1"}
    assert info["settings"] == Cp2kSettings().model_dump()  # the defaults shown converged in docs/dft_convergence.md
    assert info["train_summary"]["compositions"] == [composition]


@pytest.mark.parametrize("name", ["ws2", "w-bcc"])
def test_shipped_test_set_shares_no_structure_with_the_training_pool(name):
    assert_disjoint(load_structures(name, "train"), load_structures(name, "test"))
