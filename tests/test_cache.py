"""The user cache: computed once per key, written whole or not at all, never an error."""

from __future__ import annotations

import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from mlip_exafs.cache import cached_files, cached_json, entry_path, store_files
from mlip_exafs.pimd import highest_frequency_of, highest_frequency_rad_per_fs
from mlip_exafs.potentials import pins_content


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MLIP_EXAFS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_json_value_is_computed_once_per_key(cache):
    calls = []

    def compute(value):
        calls.append(value)
        return {"omega": value}

    assert cached_json("kind", {"a": 1}, lambda: compute(1.5)) == {"omega": 1.5}
    assert cached_json("kind", {"a": 1}, lambda: compute(9.9)) == {"omega": 1.5}
    assert cached_json("kind", {"a": 2}, lambda: compute(2.5)) == {"omega": 2.5}
    assert calls == [1.5, 2.5]


def test_a_damaged_entry_is_computed_again(cache):
    assert cached_json("kind", 7, lambda: 1.0) == 1.0
    entry_path("kind", 7).with_suffix(".json").write_text("{not json")
    assert cached_json("kind", 7, lambda: 2.0) == 2.0
    assert cached_json("kind", 7, lambda: 3.0) == 2.0


def test_unwritable_cache_still_returns_the_value(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MLIP_EXAFS_CACHE", str(blocker / "cache"))
    assert cached_json("kind", 1, lambda: 3.0) == 3.0
    store_files("kind", 1, [blocker])
    assert cached_files("kind", 1) is None


def test_files_appear_whole_and_the_first_writer_wins(cache, tmp_path):
    a, b = tmp_path / "phase.pad", tmp_path / "other" / "phase.pad"
    b.parent.mkdir()
    a.write_text("first")
    b.write_text("second")
    assert cached_files("pots", "key") is None
    store_files("pots", "key", [a])
    store_files("pots", "key", [b])
    assert (cached_files("pots", "key") / "phase.pad").read_text() == "first"
    assert not [p for p in (cache / "pots").iterdir() if p.name.startswith(".partial-")]


def test_highest_frequency_is_cached_per_potential_and_structure(cache):
    atoms = bulk("Cu", cubic=True).repeat(2)
    atoms.rattle(0.01, seed=1)
    omega = highest_frequency_rad_per_fs(atoms, EMT())
    assert highest_frequency_of(atoms, EMT(), "model.pt:sha256:0123") == pytest.approx(omega)
    # a second MD from the same structure does not ask the potential again
    assert highest_frequency_of(atoms, None, "model.pt:sha256:0123") == pytest.approx(omega)
    moved = atoms.copy()
    moved.positions[0] += 0.02
    assert highest_frequency_of(moved, EMT(), "model.pt:sha256:0123") != pytest.approx(omega, rel=1e-9)


def test_python_specs_are_never_cached(cache):
    """A python: spec names code that can change under the same name."""
    assert not pins_content("python:mymodule:Calc")
    assert pins_content("chgnet") and pins_content("model.pt:sha256:0123")
    atoms = bulk("Cu", cubic=True).repeat(2)
    atoms.rattle(0.01, seed=1)
    highest_frequency_of(atoms, EMT(), "python:ase.calculators.emt:EMT")
    with pytest.raises(RuntimeError, match="no calculator"):  # asked again: nothing was kept
        highest_frequency_of(atoms, None, "python:ase.calculators.emt:EMT")
    assert not (cache / "highest-frequency").exists()
