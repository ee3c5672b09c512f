"""Rules for the whole package (docs/robustness.md, Trust)."""

from pathlib import Path


def test_no_shell_strings_in_the_package():
    """Subprocesses get argument lists; no user path is ever pasted into a shell command."""
    package = Path(__file__).resolve().parents[1] / "src" / "mlip_exafs"
    offenders = [f"{path.name}:{n}" for path in package.rglob("*.py") for n, line in enumerate(path.read_text().splitlines(), 1)
                 if any(bad in line for bad in ("shell=True", "os.system(", "os.popen(", "commands.getoutput"))]
    assert offenders == []
