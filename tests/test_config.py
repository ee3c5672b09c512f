"""config.py: YAML read into typed settings; every failure one line, every number checked once for every verb."""

from __future__ import annotations

import pytest

from mlip_exafs.config import check_numbers, read_yaml_mapping
from mlip_exafs.errors import UserError


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: x\nmd:\n  temperature_k: 300\n  timestep_fs: 2\n  temperature_k: 400\n", "key 'temperature_k' is given twice, on lines 3 and 5; keep one"),
        ("a: 1\nb: {c: 1, c: 2}\n", "key 'c' is given twice, on line 2"),
        ("name: x\nname: y\n", "key 'name' is given twice, on lines 1 and 2"),
    ],
    ids=["nested", "flow-mapping", "top-level"],
)
def test_duplicate_yaml_keys_are_an_error_naming_key_and_line(tmp_path, text, message):
    """Plain YAML keeps the last of two equal keys without a word: a silent wrong setting."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as err:
        read_yaml_mapping(path)
    assert "\n" not in str(err.value)


def test_folder_binary_and_unreadable_configs_are_one_line_errors(tmp_path):
    (tmp_path / "bin.yaml").write_bytes(bytes(range(256)) * 4)
    for path, message in [(tmp_path, "is a folder, not a file"), (tmp_path / "bin.yaml", "is not a text file"),
                          (tmp_path / "none.yaml", "does not exist")]:
        with pytest.raises(UserError, match=message) as err:
            read_yaml_mapping(path)
        assert "\n" not in str(err.value)


def test_anchors_and_merges_still_work(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("base: &b {a: 1, b: 2}\nother:\n  <<: *b\n  b: 3\n")
    assert read_yaml_mapping(path) == {"base": {"a": 1, "b": 2}, "other": {"a": 1, "b": 3}}


@pytest.mark.parametrize(
    "data, message",
    [
        ({"x": float("nan")}, "'x' is nan, not a finite number"),
        ({"md": {"timestep_fs": float("inf")}}, "'md.timestep_fs' is inf"),
        ({"x": 1e30}, "'x' = 1e\\+30 is too large"),
        ({"finetune": {"seeds": [0, -1]}}, "'finetune.seeds.1' = -1 is not a valid seed"),
        ({"seed": 2**32}, "is not a valid seed"),
        ({"threads": 0}, "'threads' = 0 must be at least 1"),
    ],
)
def test_check_numbers(data, message):
    with pytest.raises(UserError, match=message):
        check_numbers(data, "w.yaml", keys_are_settings=False)


def test_a_bad_setting_is_marked_for_the_front_end_to_name():
    """A verb's options are stage settings: the key is marked, so the CLI names its flag and a study its YAML key."""
    with pytest.raises(UserError) as err:
        check_numbers({"seeds": [0, -1]}, "options")
    assert str(err.value) == "options: 'seeds'[1] = -1 is not a valid seed; give a whole number from 0 to 4294967295"
    assert err.value.in_terms({"seeds": "--seeds"}).startswith("options: --seeds[1] = -1")


def test_check_numbers_passes_ordinary_settings():
    check_numbers({"seed": 2**32 - 1, "threads": None, "pressure_gpa": -1.5, "ns": [1, 2, 5], "flag": True, "name": "x", "e0_ev": 69525.0}, "w")


def test_bound_errors_say_the_unit_and_messages_keep_their_case():
    """'--timestep ... less than or equal to 20' said no fs; the whole message was lower-cased ('2 å')."""
    from mlip_exafs.config import validate_model
    from mlip_exafs.settings import CompareSettings, MdSettings

    with pytest.raises(UserError, match=r"'timestep_fs' input should be less than or equal to 20 fs; fix that value"):
        validate_model(MdSettings, {"structure": "ws2", "timestep_fs": 2000}, "md")
    with pytest.raises(UserError, match="rbkg_a' \\(2 Å\\) must not exceed 'rmin_a' \\(1 Å\\)"):
        validate_model(CompareSettings, {"rbkg_a": 2.0}, "compare")
