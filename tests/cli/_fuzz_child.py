"""Load each .pt2 given as `load_model` does and run it once; one JSON line per file on stdout.

Run in a child process by tests/cli/test_fuzz.py: a native crash on some mutated file ends this
process with a signal instead of the test run, and the last "start" line names the file.

    python -m tests.cli._fuzz_child EXAMPLE_INPUTS.pt FILE.pt2...
"""

from __future__ import annotations

import json
import sys

import torch


def main(argv: list[str]) -> int:
    from pt2e_int8.app.modelspec import load_model, run_model
    from pt2e_int8.errors import UserInputError

    example = torch.load(argv[0], weights_only=True)
    for path in argv[1:]:
        print(json.dumps({"start": path}), flush=True)
        try:
            loaded = load_model(path)
            run_model(loaded.module, tuple(example), what="fuzz", fix="")
            outcome = "ok"
        except UserInputError as e:
            outcome = f"exit2: {type(e).__name__}"
        except Exception as e:  # noqa: BLE001  (what the test looks for: an error that is not the user's)
            outcome = f"other: {type(e).__name__}: {str(e)[:300]}"
        print(json.dumps({"path": path, "outcome": outcome}), flush=True)
    print(json.dumps({"done": True}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
