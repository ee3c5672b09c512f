"""From a study config to steps, from step results to ``summary.json`` and the report."""

from __future__ import annotations

import json
from pathlib import Path

from mlip_exafs.dataset import content_tag
from mlip_exafs.errors import UserError
from mlip_exafs.files import read_json, sha256_file, sha256_text
from mlip_exafs.md import comparable_settings
from mlip_exafs.md import read_result as md_read_result
from mlip_exafs.quantum import einstein_temperatures
from mlip_exafs.recommend import RULE_TEXT, recommend_n, summarize_by_n
from mlip_exafs.study.config import DatasetPlan, ExperimentPlan, StudyConfig
from mlip_exafs.study.steps import Step, all_hashes, cached_result

# A study folder: the names its readers share (the study stage's record of what it writes).
RECORD_FILE = "study.json"  # the config and every step's inputs hash
SUMMARY_FILE = "summary.json"  # the numbers of the finished study
STEPS_DIR = "steps"  # one folder per step
REPORT_FILE = "report.html"  # written by the report stage

GENERATED = "@dataset"  # the dataset parameter of steps that use the study's own ``dataset`` step


def finetuned_name(config: StudyConfig, n: int, seed: int) -> str:
    return f"{config.finetune.base}-ft-n{n}-s{seed}"


def build_steps(config: StudyConfig, hash_inputs: bool = True) -> list[Step]:
    """The study as a dependency-ordered list of steps; without a dataset, the pristine potentials' MD steps only.

    ``hash_inputs=False`` leaves out the content hashes of the files the steps read, for readers of a study folder
    whose inputs are not at hand (a dataset still being labelled, another machine): they take the hashes the
    study recorded in ``study.json``.
    """
    steps: list[Step] = []
    dataset, data_deps = config.dataset, ()
    if isinstance(config.dataset, DatasetPlan):
        steps += dataset_steps(config.dataset)
        dataset, data_deps = GENERATED, ("dataset",)
    steps += experiment_fit_steps(config, hash_inputs)
    for potential in config.pristine:
        steps += _model_steps(config, (dataset, data_deps), {"potential": potential}, {"potential": potential}, (), with_md=True, hash_inputs=hash_inputs)
    for n in config.finetune.n:
        for seed in config.finetune.seeds:
            name = finetuned_name(config, n, seed)
            params = {"base": config.finetune.base, "dataset": dataset, "n": n, "seed": seed,
                      "freeze": config.finetune.freeze, "epochs": config.finetune.epochs}
            model = {"potential": name, "n": n, "seed": seed}
            steps.append(Step(f"finetune-{name}", "finetune", params, data_deps, _split_hash(dataset, "train", hash_inputs), **model))
            with_md = n in config.md.finetuned_n and seed == config.finetune.seeds[0]
            steps += _model_steps(config, (dataset, data_deps), model, {}, (f"finetune-{name}",), with_md=with_md, hash_inputs=hash_inputs)
    return sorted(steps, key=lambda step: temperature_rank(config, step))


def temperature_rank(config: StudyConfig, step: Step) -> int:
    """Steps of the first MD temperature first, each potential's next temperature after all of them (a stable sort).

    The executor starts ready steps of equal weight in list order: so the steps that run at once
    are of different potentials, and an MD at the next temperature finds its potential's highest
    frequency, and its EXAFS the reference's FEFF potentials, in the user cache (mlip_exafs.cache).
    """
    temperatures = config.md.temperatures()
    return temperatures.index(step.temperature_k) if step.temperature_k in temperatures else 0


FIT_STEP = "fit-experiment"


def experiment_fit_steps(config: StudyConfig, hash_inputs: bool = True) -> list[Step]:
    """The experiment's own shell fit: once per spectrum (``fit-experiment``, ``fit-experiment@10K``), independent of every potential."""
    steps = []
    for plan in config.experiment:
        if not plan.fit_shells:
            continue
        temperature_k = spectrum_temperature(config, plan)
        params = {"experiment": str(plan.file), "absorber": config.absorber, "edge": config.exafs.edge, "structure": config.structure,
                  "window": plan.window(), "fit_shells": plan.fit_shells}
        steps.append(Step(f"{FIT_STEP}{md_temperature_tag(config, temperature_k)}", "fit_experiment", params, (),
                          {**_file_hash("experiment", plan.file, hash_inputs), **_file_hash("structure", config.structure, hash_inputs)},
                          temperature_k=temperature_k))
    return steps


def spectrum_temperature(config: StudyConfig, plan: ExperimentPlan) -> float:
    """The MD temperature a spectrum is compared at: its own (set when the config loads), else the first MD temperature
    (a study.json written before spectra had temperatures: one spectrum, compared at the first)."""
    return config.md.temperatures()[0] if plan.temperature_k is None else plan.temperature_k


def dataset_steps(plan: DatasetPlan) -> list[Step]:
    """Sample each split, label it with CP2K in chunks (independent steps), merge into one dataset folder."""
    steps: list[Step] = []
    chunks: list[str] = []
    for split in ("train", "test"):
        spec = getattr(plan, split)
        steps.append(Step(f"sample-{split}", "sample", {"spec": spec.model_dump()}))
        for i in range(0, spec.total(), plan.chunk):
            name = f"label-{split}-{i // plan.chunk:03d}"
            params = {"split": split, "first": i, "count": min(plan.chunk, spec.total() - i), "cp2k": plan.cp2k.as_params()}
            steps.append(Step(name, "label", params, (f"sample-{split}",)))
            chunks.append(name)
    steps.append(Step("dataset", "dataset", {}, tuple(chunks)))
    return steps


def _model_steps(config: StudyConfig, data: tuple, model: dict, potential: dict, deps: tuple[str, ...], with_md: bool,
                 hash_inputs: bool) -> list[Step]:
    """Validate (against the dataset's test split) and, with MD, analyze/EXAFS/compare one potential.

    ``model`` is what the steps are about (``potential``, and ``n``, ``seed`` of a fine-tuned
    model); ``potential`` is the action's parameter (empty for a fine-tuned model, whose
    checkpoint comes from its fine-tune step).
    """
    dataset, data_deps = data
    name = model["potential"]
    steps = []
    if dataset is not None:
        steps.append(Step(f"validate-{name}", "validate", {"dataset": dataset, **potential}, (*deps, *data_deps), _split_hash(dataset, "test", hash_inputs), **model))
    if not with_md:
        return steps
    md_base = comparable_settings(config.md.model_dump(exclude={"finetuned_n", "temperatures_k", "npt_fs"}))  # nuclei/beads at their defaults leave the steps' hashes as they were
    npt = {"npt_fs": config.md.npt_time_fs()} if config.md.npt_time_fs() else {}  # absent at 0: one-temperature steps keep their hashes
    exafs = {"absorber": config.absorber, "edge": config.exafs.edge, "rmax_a": config.exafs.rmax_a, "engine": config.exafs.engine}
    for index, temperature in enumerate(config.md.temperatures()):
        tag = temperature_tag(index, temperature)
        md = {**md_base, "temperature_k": temperature, **npt}
        at = {**model, "temperature_k": temperature}
        steps.append(Step(f"md{tag}-{name}", "md", {"structure": config.structure, "settings": md, **potential}, deps,
                          _file_hash("structure", config.structure, hash_inputs), **at))
        steps.append(Step(f"analyze{tag}-{name}", "analyze", {"absorber": config.absorber, **series_reference(config)}, (f"md{tag}-{name}",), **at))
        steps.append(Step(f"exafs{tag}-{name}", "exafs", exafs, (f"md{tag}-{name}",), **at))
    for plan in config.experiment:  # each spectrum against the EXAFS of the MD at its temperature
        temperature_k = spectrum_temperature(config, plan)
        tag = md_temperature_tag(config, temperature_k)
        compare = {"experiment": str(plan.file), "absorber": config.absorber, "edge": config.exafs.edge, "window": plan.window()}
        steps.append(Step(f"compare{tag}-{name}", "compare", compare, (f"exafs{tag}-{name}",), _file_hash("experiment", plan.file, hash_inputs),
                          **model, temperature_k=temperature_k))
    return steps


def series_reference(config: StudyConfig) -> dict:
    """The analysis reference of a temperature series: the crystal every MD starts from. σ²(T) and θ_E compare one
    shell across temperatures, so it must be one pair list at each; each temperature's own symmetrized frame average
    can split or merge shells differently (a tilt found at 10 K only splits SrTiO3's 12 Sr-O). Its shells are also
    the ones the experiment's shell fit names. One temperature keeps its trajectory's own average (and its hashes)."""
    if len(config.md.temperatures()) < 2:
        return {}
    return {"reference": config.structure, "reference_supercell": config.md.supercell}


def temperature_tag(index: int, temperature_k: float) -> str:
    """'' for the first MD temperature (the step names of a one-temperature study), '@10K' for the others."""
    return "" if index == 0 else f"@{temperature_k:g}K"


def md_temperature_tag(config: StudyConfig, temperature_k: float) -> str:
    """The step-name tag of one of the study's MD temperatures."""
    return temperature_tag(config.md.temperatures().index(temperature_k), temperature_k)


def _split_hash(dataset: str, split: str, hash_inputs: bool = True) -> dict:
    """The content hash of a dataset split, so new or changed labels rerun the steps that read them."""
    return {split: content_tag(dataset, split)} if hash_inputs and dataset != GENERATED else {}


def _file_hash(key: str, path: str | Path, hash_inputs: bool = True) -> dict:
    """The content hash of an input file (a built-in structure name has none)."""
    return {key: sha256_file(path)[:16]} if hash_inputs and Path(path).is_file() else {}


def with_dependencies(steps: list[Step], names: list[str]) -> list[Step]:
    """The named steps and everything they depend on, in the original (dependency) order."""
    by_name = {s.name: s for s in steps}
    wanted: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(by_name[name].deps)
    return [s for s in steps if s.name in wanted]


def potential_names(config: StudyConfig) -> list[str]:
    return list(config.pristine) + [finetuned_name(config, n, s) for n in config.finetune.n for s in config.finetune.seeds]


VALIDATION_KEYS = ("energy_mae_mev_atom", "force_mae_ev_a", "force_rmse_ev_a", "stress_mae_gpa", "softening_slope", "cmae_ev_a", "n_test_structures")
LEARNING_CURVE_KEYS = ("force_mae_ev_a", "softening_slope", "energy_mae_mev_atom", "stress_mae_gpa")  # mean ± std over seeds per N
EXAFS_KEYS = ("r_factor_k", "r_factor_r", "s02", "de0_ev", "kmin", "kmax", "rmin", "rmax")


def exafs_record(comparison: dict | None) -> dict | None:
    """A potential's comparison with a spectrum in ``summary.json``; ``fit_failed`` is the reason when the fit failed
    (None otherwise, and for comparisons cached before fits could fail)."""
    if comparison is None:
        return None
    return {k: comparison[k] for k in EXAFS_KEYS} | {"fit_failed": comparison.get("fit_failed")}


def study_steps(study_dir: Path) -> list[Step]:
    """The steps of a study folder, as its ``study.json`` config defines them: for readers of a finished study."""
    return build_steps(StudyConfig.model_validate(read_json(study_dir / RECORD_FILE)["config"]), hash_inputs=False)


def find_step(steps: list[Step], action: str, potential: str | None = None, temperature_k: float | None = None) -> Step | None:
    """The one step with this action, about this potential (and at this temperature); None if the study has none."""
    matches = [s for s in steps if s.action == action and s.potential == potential and (temperature_k is None or s.temperature_k == temperature_k)]
    if len(matches) > 1:
        raise ValueError(f"{len(matches)} {action} steps for {potential} at {temperature_k} K: give the temperature")
    return matches[0] if matches else None


def summarize(config: StudyConfig, results: dict[str, dict], steps: list[Step] | None = None) -> dict:
    """``summary.json``: per-potential numbers, the learning curve and the recommended N.

    A potential's ``msrd`` is its MD at the first temperature, its ``exafs`` the comparison
    with the first spectrum (the keys of a one-temperature, one-spectrum study);
    ``by_temperature`` has every temperature. ``validation`` is None without a dataset.
    """
    steps = build_steps(config) if steps is None else steps
    first_k = config.md.temperatures()[0]
    spectra_k = [spectrum_temperature(config, plan) for plan in config.experiment]

    def result(action: str, potential: str | None, temperature_k: float | None = None) -> dict | None:
        step = find_step(steps, action, potential, temperature_k)
        return results.get(step.name) if step else None

    potentials = {}
    for name in potential_names(config):
        validation = result("validate", name)
        analysis = result("analyze", name, first_k)
        comparison = result("compare", name, spectra_k[0]) if spectra_k else None
        potentials[name] = {
            "validation": {k: validation[k] for k in VALIDATION_KEYS} if validation else None,
            "msrd": analysis["msrd"] if analysis else None,
            "exafs": exafs_record(comparison),
        }
        if analysis:
            potentials[name].update(temperature_series(config, name, result))
    rows = finetuned_validations(config, lambda name: potentials[name]["validation"])
    recommended, rule = recommend(config, potentials, rows)
    summary = {"study": config.name, "potentials": potentials, "learning_curve": learning_curve_rows(rows),
               "learning_curve_by_n": summarize_by_n(rows, keys=LEARNING_CURVE_KEYS) if rows else [],
               "recommended_n": recommended, "recommended_n_rule": rule}
    if config.experiment:
        spectra = [{"file": str(plan.file), "temperature_k": t, "fit": result("fit_experiment", None, t)} for plan, t in zip(config.experiment, spectra_k)]
        summary["experiment"] = {"file": spectra[0]["file"], "fit": spectra[0]["fit"], "spectra": spectra}
    return summary


def temperature_series(config: StudyConfig, name: str, result) -> dict:
    """``by_temperature`` ("<T>" -> msrd, exafs) of one potential, and ``einstein_k`` per shell from ≥ 2 temperatures.

    ``result(action, potential, temperature_k)`` gives a step's result, None when it has none.
    """
    by_temperature = {}
    for temperature in config.md.temperatures():
        analysis = result("analyze", name, temperature)
        comparison = result("compare", name, temperature)
        by_temperature[f"{temperature:g}"] = {"msrd": analysis["msrd"] if analysis else None,
                                              "exafs": exafs_record(comparison),
                                              "production_temperature_k": production_temperature_k(result("md", name, temperature))}
    series = {"by_temperature": by_temperature}
    if len(by_temperature) >= 2:
        series["einstein_k"] = einstein_temperatures(by_temperature, config.absorber, config.md.nuclei)
    return series


def production_temperature_k(md_result: dict | None) -> float | None:
    """The mean temperature an MD's production ran at (md.json), which its σ² belongs to; None without one.

    A thermostat realizes its target only on average: the review's 10/100/300 K series of a small cell ran at
    8.9/88.5/267.8 K, and θ_E fitted at the targets came out 7 % high.
    """
    record = md_read_result(Path(md_result["snapshots"]).parent) if md_result else None
    realized = (record or {}).get("production_temperature_k")
    return round(realized["mean"], 2) if realized else None


def require_study_folder(study_dir: Path) -> None:
    """A one-line error for a folder that no study wrote (readers of a study folder start here)."""
    if not (study_dir / RECORD_FILE).exists():
        raise UserError(f"{study_dir} has no study.json; run 'mlip-exafs study CONFIG --out {study_dir}' first")


def recorded_steps(study_dir: Path) -> tuple[StudyConfig, list[Step], dict[str, str]]:
    """A study folder's config, steps and the inputs hash a finished step must carry: the one ``study.json``
    recorded, or for a step the study did not have yet, the hash it has now."""
    require_study_folder(study_dir)
    record = read_json(study_dir / RECORD_FILE)
    config = StudyConfig.model_validate(record["config"])
    recorded = record.get("step_inputs", {})
    steps = build_steps(config, hash_inputs=False)  # with every hash recorded, its inputs need not be at hand
    if any(step.name not in recorded for step in steps):  # an older study.json: the hashes its inputs give now
        steps = build_steps(config)
    return config, steps, {**all_hashes(steps), **recorded}


SUMMARY_STEPS_KEY = "step_inputs_sha256"  # which steps a summary.json summarizes (the hashes study.json records)


def steps_digest(hashes: dict[str, str]) -> str:
    return sha256_text(json.dumps(hashes, sort_keys=True))


def summary_is_current(study_dir: Path, summary: dict) -> bool:
    """Whether ``summary.json`` summarizes the steps ``study.json`` now records: a rerun with a changed config rewrites
    study.json at its start and summary.json at its end (a summary written before the key existed counts as current)."""
    recorded = summary.get(SUMMARY_STEPS_KEY)
    return recorded is None or recorded == steps_digest(read_json(study_dir / RECORD_FILE).get("step_inputs", {}))


def summary_of_finished_steps(study_dir: Path) -> dict:
    """What ``summary.json`` would say of a study that is not finished, with its unfinished steps named.

    A step counts as finished when its ``step.json`` carries the inputs hash that the
    study recorded in ``study.json`` (or, for a step the study did not have yet, the
    hash it has now), so the report of a paper study can be read while its last MD runs.
    """
    config, steps, hashes = recorded_steps(study_dir)
    results = {s.name: r for s in steps if (r := cached_result(study_dir / STEPS_DIR, s, hashes[s.name])) is not None}
    unfinished = [s for s in steps if s.name not in results]
    if first := next((s for s in unfinished if s.action in ("validate", "finetune")), None):
        raise UserError(f"{study_dir} has unfinished fine-tunes or validations ({first.name}, …); rerun the study to finish them first")
    return summarize(config, results, steps) | {"unfinished_steps": [s.name for s in unfinished]}


def finetuned_validations(config: StudyConfig, validation_of) -> list[dict]:
    """One ``{n, seed, **validation}`` row per fine-tuned model; ``validation_of(name)`` gives its validate keys."""
    return [{"n": n, "seed": s, **validation_of(finetuned_name(config, n, s))} for n in config.finetune.n for s in config.finetune.seeds]


def learning_curve_rows(rows: list[dict]) -> list[dict]:
    """``summary.json``'s ``learning_curve``: force MAE and slope of every fine-tuned (N, seed)."""
    return [{k: row[k] for k in ("n", "seed", "force_mae_ev_a", "softening_slope")} for row in rows]


def partial_learning_curve(config: StudyConfig, results: dict[str, dict]) -> dict:
    """What ``--only learning-curve`` can say: the learning curve and the N that the DFT criteria recommend."""
    steps = build_steps(config)

    def validation(potential: str) -> dict:
        return results[find_step(steps, "validate", potential).name]

    rows = finetuned_validations(config, validation)
    by_n = summarize_by_n(rows)
    pristine = {p: {k: validation(p)[k] for k in VALIDATION_KEYS} for p in config.pristine}
    return {"pristine": pristine, "learning_curve": learning_curve_rows(rows), "by_n": by_n,
            "recommended_n": recommend_n(by_n), "recommended_n_rule": RULE_TEXT}


EXAFS_TOLERANCE = 0.10  # relative R-factor margin over the best model


def recommend(config: StudyConfig, potentials: dict, rows: list[dict]) -> tuple[int | None, str]:
    """Smallest N passing the DFT criteria and, with an experiment, agreeing with EXAFS as well as the best model."""
    if config.dataset is None:
        return None, "no dataset in this study (pristine only): nothing is fine-tuned or validated against DFT, so there is no N to recommend"
    if not rows:
        return None, "no fine-tuned models in this study"
    by_n = summarize_by_n(rows)
    dft_ok = {s["n"] for s in by_n if recommend_n([s, by_n[-1]]) == s["n"]}
    exafs_r = {n: potentials[finetuned_name(config, n, config.finetune.seeds[0])]["exafs"] for n in config.md.finetuned_n}
    exafs_r = {n: e["r_factor_r"] for n, e in exafs_r.items() if e and not e.get("fit_failed")}  # a failed fit decides nothing
    if not config.experiment or not exafs_r:
        return recommend_n(by_n), RULE_TEXT
    best = min([*exafs_r.values(), *(potentials[p]["exafs"]["r_factor_r"] for p in config.pristine if potentials[p]["exafs"] and not potentials[p]["exafs"].get("fit_failed"))])
    passing = sorted(n for n, r in exafs_r.items() if n in dft_ok and r <= (1 + EXAFS_TOLERANCE) * best)
    rule = f"{RULE_TEXT}; and, among the N with MD-EXAFS, an R-space R-factor within {EXAFS_TOLERANCE:.0%} of the best model's"
    if passing:
        dft_alone = recommend_n(by_n)
        if dft_alone is not None and dft_alone < passing[0] and dft_alone not in exafs_r:
            rule += (f" (N = {dft_alone} already passes the DFT criteria but has no MD-EXAFS: N = {passing[0]} is the smallest N "
                     "with MD-EXAFS that passes both)")
        return passing[0], rule
    return recommend_n(by_n), RULE_TEXT + " (no N with MD-EXAFS also passed the EXAFS criterion, so it is not applied)"
