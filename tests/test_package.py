"""Rules for the whole package (docs/robustness.md, Trust)."""

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
