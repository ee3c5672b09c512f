"""Entry point of a step's child process: ``python -m mlip_exafs.study.child FOLDER``.

Reads the call from ``FOLDER/.step-call.json``, runs the action, and writes
its result (or the user error) next to it for the parent to pick up.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import ValidationError

import mlip_exafs.study.actions  # noqa: F401  (registers the actions)
from mlip_exafs.config import user_error_of
from mlip_exafs.errors import UserError
from mlip_exafs.files import read_json, write_json
from mlip_exafs.study.steps import ACTIONS, CALL_FILE, ERROR_FILE, RESULT_FILE


def main(folder: Path) -> int:
    call = read_json(folder / CALL_FILE)
    try:
        result = ACTIONS[call["action"]](folder, call["deps"], **call["params"])
    except UserError as exc:
        write_json(folder / ERROR_FILE, {"message": exc.marked})  # settings still marked: the study names them as YAML keys
        return 2
    except ValidationError as exc:  # a setting the study's checks at load missed: still one line, not "exit 1"
        write_json(folder / ERROR_FILE, {"message": user_error_of(exc, f"{call['action']} settings").marked})
        return 2
    write_json(folder / RESULT_FILE, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
