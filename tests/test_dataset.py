"""The shipped CP2K datasets: addressable by name, one level of theory, test held out."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import assert_nothing_written, assert_one_line_error, cli, run_cli
from mlip_exafs.dataset import SHIPPED, assert_disjoint, load_structures, shipped_dir
from mlip_exafs.cp2k import Cp2kSettings


COMPOSITIONS = {"ws2": "S36W18", "w-bcc": "W16", "mos2": "Mo18S36"}
PACKED = [name for name in SHIPPED if (shipped_dir(name) / "train.db.gz").exists()]  # mos2 joins once it is packed


def test_every_shipped_name_has_a_composition_and_the_finished_ones_are_packed():
    assert set(COMPOSITIONS) == set(SHIPPED)
    assert {"ws2", "w-bcc"} <= set(PACKED)


@pytest.mark.parametrize("name", PACKED)
def test_shipped_dataset_info_names_counts_code_and_settings(name):
    composition = COMPOSITIONS[name]
    info = json.loads(run_cli("dataset", "info", name, "--json", check=True).stdout)
    assert info["n_train"] >= 10 and info["n_test"] >= 3  # the quick studies fine-tune on up to 10
    assert info["n_train_not_converged"] == 0 and info["n_test_not_converged"] == 0
    assert info["dft_code"] == {"name": "CP2K", "version": "2023.1"}
    assert info["settings"] == Cp2kSettings().level_of_theory()  # the defaults shown converged in docs/dft_convergence.md
    assert info["settings_hash"] == Cp2kSettings().settings_hash()
    assert info["train_summary"]["compositions"] == [composition]


@pytest.mark.parametrize("name", PACKED)
def test_shipped_test_set_shares_no_structure_with_the_training_pool(name):
    assert_disjoint(load_structures(name, "train"), load_structures(name, "test"))


def _labelled_db(path: Path, kinds: list[str]) -> Path:
    """A small WS2 database; kinds: ok, nan-forces, inf-energy, unconverged."""
    import ase.db
    from ase.calculators.singlepoint import SinglePointCalculator

    from mlip_exafs.structures import load_structure

    with ase.db.connect(path) as db:
        for i, kind in enumerate(kinds):
            atoms = load_structure("ws2")
            atoms.rattle(0.05, seed=i)
            forces = np.random.default_rng(i).normal(size=(len(atoms), 3))
            energy = -50.0
            if kind == "nan-forces":
                forces[0, 0] = np.nan
            if kind == "inf-energy":
                energy = np.inf
            atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces, stress=np.zeros(6))
            db.write(atoms, key_value_pairs={"uid": f"{kind}-{i}", "scf_converged": kind != "unconverged"})
    return path


@pytest.fixture(scope="module")
def bad_dbs(tmp_path_factory) -> dict[str, Path]:
    import ase.db

    root = tmp_path_factory.mktemp("bad")
    dbs = {
        "nan-forces": _labelled_db(root / "nan.db", ["ok", "nan-forces"]),
        "inf-energy": _labelled_db(root / "inf.db", ["inf-energy"]),
        "unconverged": _labelled_db(root / "unconverged.db", ["unconverged", "unconverged"]),
    }
    with ase.db.connect(root / "empty.db") as db:
        db.metadata = {"units": {}}
    dbs["empty"] = root / "empty.db"
    return dbs


@pytest.mark.parametrize(
    "kind, needles",
    [
        ("nan-forces", ["NaN or infinite labels", "remove it or relabel it"]),
        ("inf-energy", ["NaN or infinite labels", "inf-energy-0"]),
        ("unconverged", ["no usable labelled structures", "label or import"]),
        ("empty", ["no usable labelled structures", "label or import"]),
    ],
    ids=["nan-forces", "inf-energy", "unconverged", "empty"],
)
def test_untrustworthy_or_empty_labels(capsys, tmp_path, bad_dbs, kind, needles):
    for args in (["validate", "--test", bad_dbs[kind]], ["finetune", "--train", bad_dbs[kind], "--n", "1"]):
        out = tmp_path / args[0]
        assert_one_line_error(cli(capsys, *args, "--out", out), *needles)
        assert_nothing_written(out)


def test_unconverged_rows_are_never_used(bad_dbs, tmp_path):
    """A db with converged and unconverged rows: only the converged ones are loaded."""
    import ase.db

    from mlip_exafs.dataset import load_structures

    mixed = shutil.copy(bad_dbs["unconverged"], tmp_path / "mixed.db")
    _labelled_db(Path(mixed), ["ok"])
    with ase.db.connect(mixed) as db:
        assert db.count() == 3
    assert [a.info["uid"] for a in load_structures(mixed)] == ["ok-0"]


@pytest.mark.parametrize(
    "args, needles",
    [
        (["dataset", "info", "nope"], ["unknown dataset 'nope'", "shipped name"]),
        (["dataset", "info", "{empty_folder}"], ["has neither train.db nor test.db", "label or import"]),
        (["validate", "--test", "{train_only}", "--out", "{out}"], ["has no test split", "label or import a test set"]),
        (["finetune", "--train", "{data}", "--n", "4", "--out", "{out}"], ["has 3 usable structures but n = 4", "lower --n"]),
        (["learning-curve", "--train", "{data}", "--test", "{data}", "--n", "1,4", "--out", "{out}"], ["asks for [4]", "label more"]),
    ],
    ids=["unknown-name", "folder-without-dbs", "no-test-split", "finetune-n-too-large", "learning-curve-n-too-large"],
)
def test_missing_or_too_small_datasets(capsys, tmp_path, data, args, needles):
    (tmp_path / "empty").mkdir()
    (tmp_path / "train-only").mkdir()
    shutil.copy(data / "train.db", tmp_path / "train-only" / "train.db")
    names = {"empty_folder": tmp_path / "empty", "train_only": tmp_path / "train-only", "data": data, "out": tmp_path / "out"}
    assert_one_line_error(cli(capsys, *[a.format(**names) for a in args]), *needles)
    assert_nothing_written(tmp_path / "out")


def test_a_shipped_name_not_yet_packed_is_a_one_line_error(capsys, tmp_path, monkeypatch):
    """A shipped dataset whose labelling is unfinished (mos2 until it is packed) says so instead of 'unknown'."""
    from mlip_exafs import dataset

    monkeypatch.setattr(dataset, "shipped_dir", lambda name: tmp_path / "package-data" / name)
    assert_one_line_error(cli(capsys, "dataset", "info", "mos2"), "'mos2' is not packed into this installation yet", "labelled dataset folder")
    example = Path(__file__).parent.parent / "examples" / "mos2.yaml"  # a study names it: the same line, before any step
    assert_one_line_error(cli(capsys, "study", example, "--profile", "quick", "--out", tmp_path / "out"), "'mos2' is not packed into this installation yet")
    assert_one_line_error(cli(capsys, "study", example, "--out", tmp_path / "out", "--only", "pristin"), "unknown --only 'pristin'")  # the typo first
    assert_nothing_written(tmp_path / "out")


@pytest.fixture
def package_data(tmp_path, monkeypatch) -> Path:
    """The package's shipped-datasets folder, moved to a temporary one (packing must not touch the installation)."""
    from mlip_exafs import dataset

    root = tmp_path / "package-data"
    monkeypatch.setattr(dataset, "shipped_dir", lambda name: root / name)
    monkeypatch.setattr(dataset, "SHIPPED", (*dataset.SHIPPED, "tiny"))
    return root


def test_pack_ships_a_dataset_under_its_name(capsys, tmp_path, data, package_data):
    source = Path(shutil.copytree(data, tmp_path / "source"))
    (source / "cp2k.yaml").write_text("cutoff_ry: 400\n")
    cli(capsys, "dataset", "pack", str(source), "--name", "tiny")
    assert sorted(p.name for p in (package_data / "tiny").iterdir()) == ["dataset.json", "test.db.gz", "train.db.gz"]
    assert json.loads((package_data / "tiny" / "dataset.json").read_text())["configs"] == {"cp2k.yaml": "cutoff_ry: 400\n"}
    packed = [a.info["uid"] for a in load_structures("tiny", "train")]
    assert packed == [a.info["uid"] for a in load_structures(source, "train")] and len(packed) == 3
    first = {p.name: p.read_bytes() for p in (package_data / "tiny").iterdir()}
    cli(capsys, "dataset", "pack", str(source), "--name", "tiny")  # again: the same bytes, so studies keep their cached steps
    assert {p.name: p.read_bytes() for p in (package_data / "tiny").iterdir()} == first


def test_pack_refuses_a_database_a_labeller_is_still_writing(capsys, tmp_path, data, package_data):
    """Copying a database mid-write could ship a torn file: pack waits for the labeller (its kernel lock says it runs)."""
    from mlip_exafs.files import writer_lock

    source = Path(shutil.copytree(data, tmp_path / "source"))
    with writer_lock(source, "label", ".train.db.reverse.lock", "database file's folder"):
        assert_one_line_error(cli(capsys, "dataset", "pack", str(source), "--name", "tiny"),
                              "is still writing", "train.db", "pack when it has finished")
    assert not package_data.exists()
    (source / ".train.db.forward.lock").write_text("12345")  # left by a killed labeller: not held, so no refusal
    cli(capsys, "dataset", "pack", str(source), "--name", "tiny")


@pytest.mark.parametrize("name", ["mycu", "../../escape"])
def test_pack_refuses_a_name_no_verb_would_find(capsys, tmp_path, data, package_data, name):
    """'mycu' packed fine and then was an unknown dataset; '../../escape' wrote outside the package."""
    assert_one_line_error(cli(capsys, "dataset", "pack", str(data), "--name", name), f"'{name}' is not a shipped dataset name",
                          "give your own labels as their folder")
    assert not package_data.exists() and not (tmp_path / "escape").exists()


def test_pack_refuses_a_damaged_database(capsys, tmp_path, data, package_data):
    source = Path(shutil.copytree(data, tmp_path / "source"))
    raw = bytearray((source / "test.db").read_bytes())
    raw[4096:8192] = b"\xff" * 4096  # a page of the table's B-tree overwritten
    (source / "test.db").write_bytes(bytes(raw))
    assert_one_line_error(cli(capsys, "dataset", "pack", str(source), "--name", "tiny"), "test.db", "restore it from git")
    assert not package_data.exists()


@pytest.fixture
def overlapping(data, tmp_path) -> Path:
    """A dataset whose test split is a copy of its train split."""
    folder = tmp_path / "overlap"
    folder.mkdir()
    shutil.copy(data / "train.db", folder / "train.db")
    shutil.copy(data / "train.db", folder / "test.db")
    return folder


def test_duplicates_between_train_and_test_are_refused_by_learning_curve(capsys, tmp_path, data, overlapping):
    out = tmp_path / "lc"
    proc = cli(capsys, "learning-curve", "--train", data, "--test", overlapping, "--n", "1", "--seeds", "0", "--epochs", "1", "--out", out)
    assert_one_line_error(proc, "3 structure(s) appear in both the training pool and the test set", "sampled separately")
    assert_nothing_written(out)


def test_duplicates_between_train_and_test_are_refused_by_study(capsys, tmp_path, overlapping):
    config = {"name": "dup", "structure": "ws2", "absorber": "W", "dataset": str(overlapping), "pristine": ["chgnet"],
              "finetune": {"n": [1], "seeds": [0], "epochs": 1}}
    (tmp_path / "dup.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "study"
    assert_one_line_error(cli(capsys, "study", tmp_path / "dup.yaml", "--out", out), "both the training pool and the test set")
    assert_nothing_written(out)


@pytest.mark.parametrize("structure, dataset, needle", [
    ("w-bcc", "{data}", "holds S-W structures but the study's structure is W"),
    ("ws2", "{data}/train.db", "is one database file, which would be both the training pool and the test set"),
])
def test_study_refuses_a_dataset_it_cannot_use(capsys, tmp_path, data, structure, dataset, needle):
    """Another material's labels, or one .db for both splits, are refused before any step runs."""
    config = {"name": "wrong", "structure": structure, "absorber": "W", "dataset": dataset.format(data=data), "pristine": ["chgnet"],
              "finetune": {"n": [1], "seeds": [0], "epochs": 1}, "md": {"supercell": "4x4x4"}, "exafs": {"rmax_a": 5.0}}
    (tmp_path / "wrong.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "study"
    assert_one_line_error(cli(capsys, "study", tmp_path / "wrong.yaml", "--out", out), needle)
    assert_nothing_written(out)


def _not_an_ase_db(path: Path, kind: str) -> Path:
    import sqlite3

    if kind == "empty-file":
        path.write_bytes(b"")
    elif kind == "not-sqlite":
        path.write_text("uid,energy\nw-0,-1.0\n")
    else:  # another program's SQLite file
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE songs (title TEXT)")
        con.execute("INSERT INTO songs VALUES ('x')")
        con.commit()
        con.close()
    return path


@pytest.mark.parametrize("kind, needle", [("empty-file", "is not an ASE database"), ("not-sqlite", "is not an SQLite database"),
                                          ("other-sqlite", "is not an ASE database")])
def test_input_databases_are_never_written_to(capsys, tmp_path, kind, needle):
    """validate and dataset info used to add ASE's tables to any file given as a database; now they refuse it, byte-identical."""
    import hashlib

    db = _not_an_ase_db(tmp_path / "input.db", kind)
    before = hashlib.md5(db.read_bytes()).hexdigest()
    for args in (["validate", "--test", db, "--out", tmp_path / "out"], ["dataset", "info", db],
                 ["finetune", "--train", db, "--n", "1", "--out", tmp_path / "out"]):
        assert_one_line_error(cli(capsys, *args), needle, "give")
        assert hashlib.md5(db.read_bytes()).hexdigest() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["input.db"]  # no journal, no output folder


def test_reading_a_dataset_leaves_it_byte_identical(capsys, tmp_path, data):
    import hashlib

    db = Path(shutil.copy(data / "test.db", tmp_path / "test.db"))
    before = hashlib.md5(db.read_bytes()).hexdigest()
    assert cli(capsys, "dataset", "info", db).returncode == 0
    assert len(load_structures(db)) == 2
    assert hashlib.md5(db.read_bytes()).hexdigest() == before


def _db_with_row(path: Path, labelled: bool, scf_converged) -> Path:
    import ase.db
    from ase.calculators.singlepoint import SinglePointCalculator

    from mlip_exafs.structures import load_structure

    atoms = load_structure("w-bcc")
    if labelled:
        atoms.calc = SinglePointCalculator(atoms, energy=-25.0, forces=np.zeros((len(atoms), 3)))
    keys = {"uid": "w-0"} if scf_converged is None else {"uid": "w-0", "scf_converged": scf_converged}
    with ase.db.connect(path) as db:
        db.write(atoms, key_value_pairs=keys)
    return path


@pytest.mark.parametrize(
    "labelled, scf_converged, needles",
    [
        (False, True, ["row 1 (w-0) has no energy and no forces, it is unlabelled", "label it with 'mlip-exafs label'"]),
        (True, "yes", ["row 1 has scf_converged = 'yes' (str), not true or false", "set the key to a boolean"]),
        (True, "no", ["scf_converged = 'no' (str)"]),  # was used for training: any non-empty text is true
    ],
    ids=["unlabelled", "text-yes", "text-no"],
)
def test_unlabelled_rows_and_text_typed_keys_are_one_line_errors(capsys, tmp_path, labelled, scf_converged, needles):
    """Was an AttributeError traceback ('AtomsRow' object has no attribute 'energy'), and a text scf_converged counted
    as unconverged by 'dataset info' but used by validate and finetune."""
    db = _db_with_row(tmp_path / "x.db", labelled, scf_converged)
    for args in (["validate", "--test", db, "--out", tmp_path / "v"], ["finetune", "--train", db, "--n", "1", "--out", tmp_path / "f"],
                 ["dataset", "info", db]):
        assert_one_line_error(cli(capsys, *args), *needles)
    assert_nothing_written(tmp_path / "v")
    assert_nothing_written(tmp_path / "f")


def test_rows_without_scf_converged_count_as_converged_everywhere(tmp_path):
    """Imported labels carry no scf_converged: 'dataset info' counted them unconverged while every verb used them."""
    from mlip_exafs.dataset import dataset_info

    db = _db_with_row(tmp_path / "imported.db", True, None)
    info = dataset_info(db)
    assert info["n_all"] == 1 and info["n_all_not_converged"] == 0 and len(load_structures(db, "all")) == 1


def test_dataset_info_says_which_solver_labelled_the_rows(tmp_path, capsys):
    """A database continued with a faster CP2K solver (same settings hash) says so, with the rows' SCF steps."""
    import ase.db

    db = _labelled_db(tmp_path / "mixed.db", ["ok", "ok", "ok"])
    with ase.db.connect(db) as conn:
        conn.update(2, broyden_nbuffer=8, scf_steps=20)
        conn.update(3, broyden_nbuffer=8, scf_steps=23)
    proc = cli(capsys, "dataset", "info", db)
    assert proc.returncode == 0 and "solver broyden_nbuffer=8 (2 rows); median SCF steps 21.5" in proc.stdout


def test_dataset_info_gives_the_range_of_spin_polarised_moments(tmp_path, capsys):
    """Spin-polarised rows record their cell's Mulliken moment: info shows it per atom, so a collapsed moment stands out."""
    import ase.db

    db = _labelled_db(tmp_path / "spin.db", ["ok", "ok"])
    with ase.db.connect(db) as conn:
        n_atoms = conn.get(id=1).natoms
        conn.update(1, magnetic_moment_mub=2.2 * n_atoms)
        conn.update(2, magnetic_moment_mub=0.1 * n_atoms)
    proc = cli(capsys, "dataset", "info", db)
    assert proc.returncode == 0 and "magnetic moment 0.100 .. 2.200 μB/atom" in proc.stdout
    assert "magnetic moment" not in cli(capsys, "dataset", "info", _labelled_db(tmp_path / "plain.db", ["ok"])).stdout
