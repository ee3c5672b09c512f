"""The ``mlip-exafs`` command line: one verb per pipeline stage.

Each verb is a thin wrapper: parse options, call the stage function, print a
short summary. A :class:`UserError` becomes one line on stderr and exit code 2,
the settings it names (:func:`mlip_exafs.errors.setting`) named as the verb's flags.
"""

from __future__ import annotations

import importlib
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import click
import typer
from pydantic import BaseModel
from rich.console import Console
from typer.core import TyperOption

import mlip_exafs
from mlip_exafs.config import check_numbers
from mlip_exafs.errors import UserError
from mlip_exafs.potentials import available_potentials
from mlip_exafs.settings import BUILTIN_STRUCTURES

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Is this universal ML potential right for my material?")
console = Console(soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        print(f"mlip-exafs {mlip_exafs.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """mlip-exafs: validate and fine-tune universal ML potentials against DFT and EXAFS."""


POTENTIAL_HELP = "Registered name (see 'mlip-exafs potentials'), checkpoint .pt, or python:MODULE:CALLABLE[?key=value&...]."
STRUCTURE_HELP = f"Built-in crystal ({', '.join(BUILTIN_STRUCTURES)}) or structure file (CIF, POSCAR, extxyz, ...)."
DEVICE_HELP = "auto (a CUDA GPU when torch sees one, else CPU), cpu or cuda."
CLI_POTENTIAL = "chgnet"  # --potential of singlepoint and validate, whose functions take the potential without a default


def default_text(model: type[BaseModel], field: str, shown: Callable[[Any], str] | None = None) -> str:
    """'default 300': the settings model's default of ``field``, for an option's --help.

    Options default to 'not given' (None) so that the model's default applies; their help
    reads it from the model, so that the two cannot drift apart.
    """
    value = model.model_fields[field].default
    if shown is not None:
        text = shown(value)
    elif isinstance(value, (list, tuple)):
        text = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    else:
        text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"default {text}"


def given(**options: Any) -> dict[str, Any]:
    """The options the user gave (not None), named as the settings they set: the rest keep the model's defaults."""
    return {name: value for name, value in options.items() if value is not None}


@app.command("potentials")
def potentials_cmd() -> None:
    """List the potentials available offline: name, family, fine-tunable, what each was trained on."""
    from mlip_exafs.finetune import TRAINERS  # lazy: finetune loads matplotlib and ase; keeps --help fast

    print(f"{'name':15s} {'family':9s} {'finetune':8s} model; trained on")
    for info in available_potentials():
        trainable = "yes" if info.family in TRAINERS else "no"
        print(f"{info.name:15s} {info.family:9s} {trainable:8s} {info.description}; {info.trained_on}")
    print(f"{'PATH.pt':15s} {'(its own)':9s} {'yes':8s} a checkpoint written by 'mlip-exafs finetune' (it names its family)")
    print(f"{'python:M:F':15s} {'python':9s} {'no':8s} any ASE calculator returned by F(**kwargs) from module M, e.g. python:ase.calculators.emt:EMT")


@app.command("singlepoint")
def singlepoint_cmd(
    structure: str = typer.Argument(..., help=STRUCTURE_HELP),
    potential: Optional[str] = typer.Option(None, "--potential", "-p", help=f"{POTENTIAL_HELP} Default {CLI_POTENTIAL}."),
    supercell: Optional[str] = typer.Option(None, "--supercell", help="Repeat the cell, e.g. 3x3x1."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads (default: $MLIP_EXAFS_THREADS, else all cores)."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP + " Default: $MLIP_EXAFS_DEVICE, else auto."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (every atom's forces included) instead of a summary."),
) -> None:
    """Energy (eV), forces (eV/Å) and stress (GPa) of one structure."""
    from mlip_exafs.singlepoint import singlepoint  # lazy: singlepoint loads scipy and ase.io; keeps --help fast

    check_numbers({"threads": threads}, "mlip-exafs singlepoint")
    result = singlepoint(structure, potential if potential is not None else CLI_POTENTIAL, supercell, threads, device)
    if as_json:
        print(json.dumps(result, indent=1, default=lambda array: array.tolist()))
        return
    print(f"structure        {result['formula']} ({result['n_atoms']} atoms)")
    print(f"potential        {result['potential']} (family {result['family']}, device {result['device']})")
    print(f"energy           {result['energy_ev']:.6f} eV  ({result['energy_ev_atom']:.6f} eV/atom)")
    print(f"max |force|      {result['max_force_ev_a']:.6f} eV/Å")
    s = result["stress_gpa"]
    if s is None:
        print("stress (GPa)     n/a (the calculator computes no stress)")
    else:
        print("stress (GPa)     xx yy zz yz xz xy = " + " ".join(f"{v:.4f}" for v in s) + "  (positive = tensile)")


def _register_stage_verbs() -> None:
    """Stage verbs live next to their stage; import them so they attach to ``app``."""
    for module in ("label", "dataset", "finetune", "validate", "md", "analysis", "exafs", "compare", "study"):
        try:
            importlib.import_module(f"mlip_exafs.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"mlip_exafs.commands.{module}":
                raise


def _quiet_library_warnings() -> None:
    """Third-party deprecation chatter would bury the one line a user needs to read."""
    for module in ("chgnet", "sevenn", "torch", "e3nn", "larch", "pymatgen", "ase"):
        warnings.filterwarnings("ignore", module=module)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def _flags_without_a_type_label() -> None:
    """typer 0.29 labels every flag '<bool>' in --help (even --help itself), as if it took a value; a flag takes none.

    Only where that typer method exists: other typer versions have none (it stopped the whole CLI on a GPU machine's
    typer, 2026-12-04), and they need no fix.
    """
    typed = getattr(TyperOption, "display_type_rich", None)
    if typed is not None:
        TyperOption.display_type_rich = lambda self, ctx: None if self.is_flag else typed(self, ctx)


def main() -> None:
    _quiet_library_warnings()
    _flags_without_a_type_label()
    _register_stage_verbs()
    try:
        code = app(standalone_mode=False)
    except UserError as exc:
        print(f"error: {exc.in_terms(invoked_flags(sys.argv[1:]))}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, click.exceptions.Abort, KeyboardInterrupt):
        _interrupted()
    except Exception as exc:
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # click/typer usage errors
            message = " ".join(exc.format_message().split()).rstrip(".")
            if not message:  # no verb (or a group without its sub-verb): click printed the help, which is the answer
                sys.exit(0)
            print(f"error: {message}; see 'mlip-exafs --help' or 'mlip-exafs VERB --help'", file=sys.stderr)
            sys.exit(exc.exit_code)
        raise
    _exit_with(code)


def flags_of(command) -> dict[str, str]:
    """Setting -> flag of one verb (a click command): each option whose parameter is named as the stage's setting gives its long flag."""
    flags = {}
    for param in command.params:
        long = [opt for opt in param.opts if opt.startswith("--")] if param.param_type_name == "option" else []
        if long and param.name:
            flags[param.name] = long[0]
    return flags


def invoked_flags(args: list[str]) -> dict[str, str]:
    """The setting -> flag map of the verb that ``args`` invoke (empty when they name none), found by click's own parser."""
    group = typer.main.get_command(app)
    ctx = group.context_class(group, info_name="mlip-exafs", resilient_parsing=True)
    _, rest, _ = group.make_parser(ctx).parse_args(list(args))  # the group's own options (--version); the verb comes first in the rest
    command = group.get_command(ctx, rest[0]) if rest else None  # None for an unknown verb
    return flags_of(command) if command is not None else {}


INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def _exit_with(code: object) -> None:
    """Without standalone mode typer *returns* the exit code of ``typer.Exit`` and of Ctrl-C (130) instead of exiting.

    Ignoring it made an interrupted ``md`` exit 0, so ``md && exafs`` went on with a half trajectory.
    A verb's own return value (None, or a result) is not an exit code.
    """
    if code == INTERRUPTED_EXIT_CODE:
        _interrupted()
    if isinstance(code, int) and not isinstance(code, bool) and code != 0:
        sys.exit(code)


def _interrupted() -> None:
    print("error: interrupted; rerun the same command to resume", file=sys.stderr)
    sys.exit(INTERRUPTED_EXIT_CODE)
