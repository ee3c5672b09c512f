"""Everything a study's stages would refuse, checked when the config loads (#23).

A setting can pass the study's schema and still be refused by a stage: an MD
timestep above 20 fs, ``finetune.n: [0]``, kmin above kmax, a negative rmax, a
spectrum file that is a folder. The stage used to refuse it only when its step
ran, after earlier steps had run for hours, and a rerun with the bad setting
first removed that step's finished folder (its inputs had changed). So every
step is checked here, before any step runs: each stage's own settings model is
built from the step's parameters exactly as the step's action builds it, so a
check can neither miss a rule of the stage nor invent one. What no single stage
sees (``md.finetuned_n`` against ``finetune.n``) is checked across settings.
"""

from __future__ import annotations

from typing import Callable

from mlip_exafs.compare import N_FIT_PARAMETERS, CompareSettings
from mlip_exafs.config import validate_model
from mlip_exafs.errors import UserError
from mlip_exafs.exafs import ExafsSettings
from mlip_exafs.exafs.fit import check_fit_window
from mlip_exafs.finetune import TRAINERS, FinetuneRecipe, FinetuneSettings
from mlip_exafs.md import MdSettings, schedule_of
from mlip_exafs.potentials import REGISTRY, potential_id
from mlip_exafs.spectra import edge_energy_ev, read_experiment
from mlip_exafs.structures import load_structure
from mlip_exafs.study.config import StudyConfig
from mlip_exafs.study.pipeline import build_steps
from mlip_exafs.study.steps import Step, yaml_names

PLACEHOLDER_CHECKPOINT = "chgnet"  # a fine-tuned model's checkpoint exists only once its fine-tune ran: its MD is checked with the base name


def check_study(config: StudyConfig, steps: list[Step] | None = None) -> None:
    """Refuse, in the first second, every setting that a step of this study would refuse later."""
    check_across_settings(config)
    checked: set[str] = set()
    for step in build_steps(config) if steps is None else steps:
        check = STEP_CHECKS.get(step.action)
        key = f"{step.action}:{sorted(step.params.items(), key=str)}"
        if check is not None and key not in checked:  # the same parameters (one spectrum, many potentials) once
            checked.add(key)
            try:
                check(config, step)
            except UserError as exc:  # a stage's message names its settings: as this study's YAML keys
                raise UserError(exc.in_terms(yaml_names(step.action))) from None


def check_profiles(raw: dict, path) -> None:
    """``profiles`` of a study YAML: absent, null, or a mapping of names to (partial) config mappings.

    A list, a string or a null profile crashed in the profile merge (TypeError, AttributeError).
    """
    profiles = raw.get("profiles")
    if profiles is None:
        return
    if not isinstance(profiles, dict):
        raise UserError(f"study config {path}: 'profiles' is {_kind(profiles)}, not a mapping; write profiles: {{quick: {{...}}, paper: {{...}}}}")
    for name, profile in profiles.items():
        if not isinstance(profile, dict):
            raise UserError(f"study config {path}: profile '{name}' is {_kind(profile)}, not a mapping of settings; give it settings "
                            "(e.g. md: {production_fs: 2000}) or remove it")


def _kind(value) -> str:
    return "empty (null)" if value is None else {list: "a list", str: "a string"}.get(type(value), f"a {type(value).__name__}")


def check_across_settings(config: StudyConfig) -> None:
    """What no single stage sees: lists that name each other, lists without entries or with repeats."""
    plan = config.finetune
    for name, values in (("finetune.n", plan.n), ("finetune.seeds", plan.seeds), ("md.finetuned_n", config.md.finetuned_n),
                         ("pristine", config.pristine)):
        repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
        if repeated:
            raise UserError(f"study config: {name} lists {repeated[0]} twice; give each value once")
    if plan.n and not plan.seeds:
        raise UserError("study config: finetune.seeds is empty but finetune.n is not; give at least one seed, e.g. seeds: [0]")
    missing = [n for n in config.md.finetuned_n if n not in plan.n]
    if missing:
        raise UserError(f"study config: md.finetuned_n asks for the MD of the N = {missing[0]} fine-tune, but finetune.n "
                        f"({', '.join(map(str, plan.n)) or 'empty'}) has no such fine-tune; add {missing[0]} to finetune.n or remove it from md.finetuned_n")
    symbols = _structure_symbols(config.structure)
    if config.absorber not in symbols:
        raise UserError(f"study config: absorber '{config.absorber}' is not in the structure {config.structure} "
                        f"(it has {', '.join(sorted(symbols))}); choose the absorber among those")


def _structure_symbols(structure: str) -> set[str]:
    return set(load_structure(structure).get_chemical_symbols())


def _where(step: Step, block: str) -> str:
    return f"study step {step.name} ({block} settings)"


def _check_md(config: StudyConfig, step: Step) -> None:
    potential = step.params.get("potential") or PLACEHOLDER_CHECKPOINT
    settings = validate_model(MdSettings, {"structure": step.params["structure"], "potential": potential, "threads": 1, **step.params["settings"]},
                              _where(step, "md"))
    try:
        schedule_of(settings)  # whole numbers of timesteps, production at least one snapshot interval
    except UserError as exc:
        raise UserError(f"{_where(step, 'md')}: {exc.marked}") from None
    _check_potential(step.params.get("potential"), "pristine")


def _check_potential(spec: str | None, block: str) -> None:
    """A registered name or python: spec; a fine-tuned model (None here) is checked through its fine-tune."""
    if spec is not None:
        try:
            potential_id(spec)
        except UserError as exc:
            raise UserError(f"study config: {block}: {exc}") from None


def _check_finetune(config: StudyConfig, step: Step) -> None:
    p = step.params
    recipe = validate_model(FinetuneRecipe, {"freeze": p["freeze"], "epochs": p["epochs"]}, _where(step, "finetune"))
    validate_model(FinetuneSettings, {"potential": p["base"], "train": str(p["dataset"]), "n": p["n"], "seed": p["seed"], "recipe": recipe},
                   _where(step, "finetune"))
    _check_potential(p["base"], "finetune.base")
    entry = REGISTRY.get(str(p["base"]).lower())
    if entry is not None and entry.family not in TRAINERS:
        raise UserError(f"study config: finetune.base '{p['base']}' is a {entry.family} model, which mlip-exafs cannot fine-tune; "
                        f"use a {' or '.join(TRAINERS)} model")


def _check_validate(config: StudyConfig, step: Step) -> None:
    _check_potential(step.params.get("potential"), "pristine")


def _check_exafs(config: StudyConfig, step: Step) -> None:
    settings = validate_model(ExafsSettings, dict(step.params), _where(step, "exafs"))
    try:
        edge_energy_ev(settings.absorber, settings.edge)  # an edge the absorber lacks: one line naming its edges
    except UserError as exc:
        raise UserError(f"{_where(step, 'exafs')}: {exc.marked}") from None


def _check_comparison(config: StudyConfig, step: Step) -> None:
    """The compare and fit steps' settings, and the spectrum itself: read now (about a second), as the steps will read it."""
    p = step.params
    extra = {"fit_shells": p["fit_shells"], "structure": p["structure"]} if step.action == "fit_experiment" else {}
    settings = validate_model(CompareSettings, {"absorber": p["absorber"], "edge": p["edge"], **p["window"], **extra}, _where(step, "experiment"))
    check_fit_window(settings.window(), settings.rmin_a, settings.rmax_a, N_FIT_PARAMETERS, f"{_where(step, 'experiment')}: kmin, kmax, rmin, rmax")
    spectrum = read_experiment(p["experiment"], settings.absorber, settings.edge, settings.rbkg_a, settings.e0_ev)
    if spectrum.k_inv_a.max() - settings.kmin_inv_a < 3.0:
        raise UserError(f"{_where(step, 'experiment')}: {p['experiment']} has data only up to k = {spectrum.k_inv_a.max():.1f} 1/Å, "
                        f"less than 3 1/Å above kmin_inv_a = {settings.kmin_inv_a:g}; lower kmin_inv_a")


STEP_CHECKS: dict[str, Callable[[StudyConfig, Step], None]] = {
    "md": _check_md,
    "finetune": _check_finetune,
    "validate": _check_validate,
    "exafs": _check_exafs,
    "compare": _check_comparison,
    "fit_experiment": _check_comparison,
}
