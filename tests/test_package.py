"""Rules for the whole package (docs/robustness.md, Trust)."""

import re
from pathlib import Path


def test_no_shell_strings_in_the_package():
    """Subprocesses get argument lists; no user path is ever pasted into a shell command."""
    package = Path(__file__).resolve().parents[1] / "src" / "mlip_exafs"
    offenders = [f"{path.name}:{n}" for path in package.rglob("*.py") for n, line in enumerate(path.read_text().splitlines(), 1)
                 if any(bad in line for bad in ("shell=True", "os.system(", "os.popen(", "commands.getoutput"))]
    assert offenders == []


def test_every_test_cited_in_robustness_md_exists():
    """docs/robustness.md names a test per case; a renamed or moved test must not leave a dead citation."""
    import re

    root = Path(__file__).resolve().parents[1]
    cited = set(re.findall(r"(test_\w+\.py)::(test_\w+)", (root / "docs" / "robustness.md").read_text()))
    assert len(cited) > 40
    dead = [f"{f}::{t}" for f, t in sorted(cited) if not (root / "tests" / f).exists() or f"def {t}(" not in (root / "tests" / f).read_text()]
    assert dead == []



# Places in others' files that still spell a stage's file name instead of asking its OutFiles (issue #25: they
# switch to the records); the set may only shrink.
NOT_YET_SWITCHED: set[tuple[str, str]] = set()  # (file, name) still spelled outside its stage; keep it empty


def test_each_stage_output_file_is_named_in_one_place():
    """A stage's file names live in its OutFiles (or a constant beside it); everyone else asks it."""
    import dataclasses

    from mlip_exafs import analysis, compare, exafs, finetune, md, validate

    package = Path(__file__).resolve().parents[1] / "src" / "mlip_exafs"
    records = [(stage.OutFiles, stage.read_result) for stage in (md, analysis, exafs, validate, finetune, compare)]
    names = set()
    for out_files, read_result in records + [(compare.FitFiles, compare.read_fit)]:
        files = out_files(Path("/stage"))
        assert dataclasses.is_dataclass(files) and read_result(Path("/nonexistent")) is None
        names |= {getattr(files, p).name for p, v in vars(type(files)).items() if isinstance(v, property)}
    names = {n for n in names if "." in n[1:]}  # file names; folder names such as 'potentials' are also dict keys
    assert {"snapshots.extxyz", "md.json", "chi.csv", "exafs.json", "analysis.json", "validate.json", "model.pt", "finetune.json",
            "compare.json", "fitted.csv", "experiment_fit.json"} <= names
    spelled = set()
    for path in package.rglob("*.py"):
        code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        spelled |= {(path.relative_to(package).as_posix(), n) for n in names if re.search(rf"""(?<![\w.])["']{re.escape(n)}["']""", code)}
    definers = {(where, n) for where, n in spelled if _defines(package / where, n)}
    assert {n for _, n in definers} == names and len(definers) == len(names)  # each name defined once
    assert spelled - definers - NOT_YET_SWITCHED == set()


def _defines(path: Path, name: str) -> bool:
    """Whether the module defines the file name: in its OutFiles, or as a module constant."""
    text = path.read_text()
    return f'self.out / "{name}"' in text or re.search(rf'^[A-Z_]+ = "{re.escape(name)}"', text, re.M) is not None


# Flags that a string of the library may spell: not a message naming a setting (docs/development.md, "Errors").
FLAGS_OUTSIDE_THE_CLI = {
    ("cp2k.py", "--pdeathsig"): "setpriv's option in the command line that starts CP2K",
    ("cp2k.py", "--bind-to"): "mpirun's option in the command line that starts CP2K",
    ("cp2k.py", "--version"): "the argument that asks cp2k_shell its version",
    ("exafs/feff.py", "--force-reinstall"): "pip's option in the command a user should run",
}
QUOTED_COMMAND = re.compile(r"'mlip-exafs [^']*'")  # 'mlip-exafs exafs --absorber W': a whole command the user should run


def test_library_messages_name_settings_not_flags():
    """Outside the CLI (cli.py, commands/) a message names a stage's setting (errors.setting), never a CLI flag:
    a study's user reads it too, and the study has YAML keys, not flags (#25)."""
    package = Path(__file__).resolve().parents[1] / "src" / "mlip_exafs"
    found = []
    for path in package.rglob("*.py"):
        where = path.relative_to(package).as_posix()
        if where != "cli.py" and not where.startswith("commands/"):
            found += [f"{where}:{line} {flag}" for line, flag in _flags_in(path.read_text()) if (where, flag) not in FLAGS_OUTSIDE_THE_CLI]
    assert found == []
    assert _flags_in('def f():\n    """--doc"""\n    raise UserError(f"lengthen --production or {x} --every")') == [(3, "--production"), (3, "--every")]


def _flags_in(source: str) -> list[tuple[int, str]]:
    """(line, flag) of every CLI flag in the string literals of ``source``; docstrings and quoted mlip-exafs commands aside."""
    import ast

    tree = ast.parse(source)
    nodes = list(ast.walk(tree))
    docstrings = {id(node.body[0].value) for node in nodes
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and ast.get_docstring(node) is not None}
    parts = {id(v) for node in nodes if isinstance(node, ast.JoinedStr) for v in node.values}  # an f-string is checked as one text
    skipped, found = docstrings | parts, []
    for node in nodes:
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skipped:
            text = node.value
        else:
            continue
        found += [(node.lineno, flag) for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", QUOTED_COMMAND.sub("", text))]
    return found


def test_every_import_inside_a_function_says_why_it_is_lazy():
    """Imports live at module level; one inside a function (torch, chgnet, sevenn, dask, larch, an import cycle, a fast
    --help) carries '# lazy: reason' on its line, so an unexplained one cannot creep back in (#25)."""
    package = Path(__file__).resolve().parents[1] / "src" / "mlip_exafs"
    total, unexplained = 0, []
    for path in sorted(package.rglob("*.py")):
        n, lines = _unexplained_lazy_imports(path.read_text())
        total += n
        unexplained += [f"{path.relative_to(package).as_posix()}:{line}" for line in lines]
    assert not unexplained, f"{len(unexplained)} of the {total} imports inside functions lack a '# lazy: reason' comment: {unexplained}"
    assert _unexplained_lazy_imports("import os\ndef f():\n    import torch  # lazy: torch, seconds\n    def g():\n        import re\n") == (2, [5])


def _unexplained_lazy_imports(source: str) -> tuple[int, list[int]]:
    """(how many imports sit inside functions, the lines of those without '# lazy: reason' on one of their lines)."""
    import ast

    lines = source.splitlines()
    inside = {node.lineno: node for function in ast.walk(ast.parse(source)) if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
              for node in ast.walk(function) if isinstance(node, (ast.Import, ast.ImportFrom))}
    lazy = re.compile(r"#\s*lazy:\s*\S")
    return len(inside), sorted(n for n, node in inside.items() if not any(lazy.search(line) for line in lines[n - 1:node.end_lineno]))
