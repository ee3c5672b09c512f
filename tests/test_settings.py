"""mlip_exafs.settings: the stage settings, one definition each, light to import."""

import subprocess
import sys

import pytest
from pydantic import ValidationError

from mlip_exafs import settings
from mlip_exafs.errors import UserError


def test_each_stage_re_exports_its_settings():
    """The stages and the study config use the very classes of mlip_exafs.settings: one definition of each default."""
    from mlip_exafs import analysis, compare, finetune, learning_curve, md
    from mlip_exafs.exafs import stage

    assert md.MdSettings is settings.MdSettings and md.comparable_settings is settings.comparable_settings
    assert finetune.FinetuneSettings is settings.FinetuneSettings and finetune.FinetuneRecipe is settings.FinetuneRecipe
    assert learning_curve.LearningCurveSettings is settings.LearningCurveSettings
    assert analysis.AnalysisSettings is settings.AnalysisSettings
    assert stage.ExafsSettings is settings.ExafsSettings and stage.FTWindowSettings is settings.FTWindowSettings
    assert compare.CompareSettings is settings.CompareSettings


def test_import_pulls_in_no_stage():
    """The CLI reads every default from here at start-up; the stages' imports (seconds) must not come with it."""
    code = ("import sys, mlip_exafs.settings\n"
            "print(sorted(m for m in ('torch', 'scipy', 'matplotlib', 'larch', 'ase.build', 'mlip_exafs.md', 'mlip_exafs.exafs') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_validators_built_at_first_use_still_check():
    """defer_build only delays building the validators: bounds, model validators and nested defaults are as before."""
    with pytest.raises(ValidationError):
        settings.MdSettings(temperature_k=0)
    with pytest.raises(UserError, match="must be below 'kmax_inv_a' 14 Å⁻¹"):
        settings.CompareSettings(kmin_inv_a=15)
    assert settings.MdSettings(nuclei="corrected").thermostat == "langevin"
    first, second = settings.FinetuneSettings(train="ws2", n=1), settings.FinetuneSettings(train="ws2", n=2)
    assert first.recipe == settings.FinetuneRecipe() and first.recipe is not second.recipe
    assert settings.ExafsSettings().ft.window().kmax_inv_a == 15.0


def test_absorber_symbols_take_any_case_in_analyze_as_in_exafs_and_compare():
    """'analyze --absorber w' said the structure has no 'w' (it has W); exafs and compare took it."""
    from mlip_exafs.settings import AnalysisSettings, ExafsSettings

    assert AnalysisSettings(absorber="w").absorber == ExafsSettings(absorber=" w").absorber == "W"
    assert AnalysisSettings(absorber="mo").absorber == "Mo" and AnalysisSettings().absorber is None
