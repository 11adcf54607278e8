"""The `pt2e-int8` command: export, bench, compare, debug, demo.

Exit status (README, "Command line"): 0 success; 2 bad input or usage, with one paragraph naming the
problem and the fix (a traceback only with --debug); 1 anything else, or a broken
`compare --max-steps` bound. Each subcommand lives in `pt2e_int8.app.commands.<name>` and is
imported only when dispatched: `pt2e-int8 bench model.onnx` loads ONNX Runtime and nothing
of the export machinery.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import signal
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pt2e_int8.app.quiet import quiet_third_party
from pt2e_int8.errors import Pt2eInt8Error, UserInputError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXIT_TERMINATED = 128 + signal.SIGTERM  # what a shell reports for a process killed by SIGTERM

# Import-time chatter from dependencies that says nothing about the user's run
# (torchao's optional CUDA kernels, a torch deprecation about torchao's enums).
_QUIET_LOGGERS = ("torchao", "torch.utils._pytree", "executorch")


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    target: str  # "module:function", imported on dispatch


def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="a .pt2 (torch.export.save; float or already converted) or path/file.py:function / "
                        "package.module:function returning a module or (module, example_inputs)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", type=_output_dir,
                   help="directory for model.pte, model.onnx, report.*")
    p.add_argument("--format", default="pte,onnx", help="comma-separated: pte, onnx (default: both)")
    p.add_argument("--scheme", choices=("static", "dynamic", "weight-only"), default=None,
                   help="int8 scheme for a float model (default: static)")
    p.add_argument("--smooth", action="store_true",
                   help="static scheme: handle activation outliers (transformers) before quantizing: "
                        "QuantConfig.static(smooth=True)")
    p.add_argument("--calibration", metavar="FILE", help=".pt/.npz calibration batches (static scheme)")
    p.add_argument("--example-inputs", metavar="FILE", help=".pt/.npz example inputs (batch first)")
    p.add_argument("--keep-float", nargs="+", action="extend", metavar="NAME", default=[],
                   help="module paths (as in model.named_modules()) to leave in float")
    p.add_argument("--shapes", choices=("auto", "batch", "static"), default="auto",
                   help="batch dimension of the .pte: auto (default: static, exactly the example's batch; with "
                        "--max-batch a dynamic batch unless it costs XNNPACK coverage or delegate calls), batch "
                        "(always dynamic), static. The .onnx takes any batch unless static")
    p.add_argument("--max-batch", type=_positive, default=None, metavar="N",
                   help="let the .pte take any batch from 1 to N (memory is planned for N); a dynamic batch costs "
                        "XNNPACK a few percent per call, so the default is the example's static batch")
    p.add_argument("--target", choices=("auto", "x86-avx2", "x86-vnni", "arm64"), default="auto",
                   help="CPUs the .onnx is for (its int8 types): auto = this machine's; x86-avx2 is exact on every CPU")
    p.add_argument("--plan", metavar="FILE", help="a per-layer plan (plan.json from --target-metric) to quantize with")
    auto = p.add_mutually_exclusive_group()
    auto.add_argument("--target-metric", type=float, metavar="X",
                      help="search: move the fewest layers off static int8 until --metric reaches X")
    auto.add_argument("--max-drop", type=_non_negative_float, metavar="D",
                      help="search: as --target-metric, with X = the float model's --metric minus D")
    p.add_argument("--metric", choices=("cosine", "sqnr"), default="cosine",
                   help="search metric: outputs vs the float model's on --eval-inputs (default cosine)")
    p.add_argument("--eval-inputs", metavar="FILE", help=".pt/.npz inputs the search measures on "
                   "(default: the calibration batches; pass held-out data)")
    _add_trust(p)


def _add_trust(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-model-file", action="store_true",
                   help="load a .pt2 MODEL with everything torch.export.load would run from it (pickled "
                        "objects, shape expressions): only for files you trust like a script")


def _add_debug(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="the float model: a .pt2 or path/file.py:function")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory for debug.json and debug.png")
    p.add_argument("--scheme", choices=("static", "dynamic", "weight-only"), default=None,
                   help="int8 scheme to debug (default: static)")
    p.add_argument("--plan", metavar="FILE", help="a per-layer plan (plan.json) instead of --scheme")
    p.add_argument("--keep-float", nargs="+", action="extend", metavar="NAME", default=[],
                   help="module paths to leave in float")
    p.add_argument("--calibration", metavar="FILE", help=".pt/.npz calibration batches")
    p.add_argument("--example-inputs", metavar="FILE", help=".pt/.npz example inputs (batch first)")
    p.add_argument("--inputs", metavar="FILE", help=".pt/.npz inputs to measure on (default: the calibration batches)")
    p.add_argument("--artifacts", metavar="FORMATS", default=None,
                   help="also read each layer's output from these artifacts, e.g. pte,onnx")
    p.add_argument("--sensitivity", action="store_true",
                   help="also measure the output cosine with each layer alone moved off static int8")
    _add_trust(p)


def _add_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help=".pte and/or .onnx files; timed interleaved")
    p.add_argument("--iters", type=_positive, default=100, help="timed iterations per artifact (default 100)")
    p.add_argument("--warmup", type=_non_negative, default=10, help="untimed runs first (default 10)")
    p.add_argument("--threads", type=_positive, default=None, help="runtime threads (default: the runtime's)")
    p.add_argument("--inputs", metavar="FILE", help=".pt/.npz inputs (default: random, of the file's signature)")
    p.add_argument("--batch", type=_positive, default=None,
                   help="batch size of random inputs (default 1, or the batch a static-shape .pte takes)")
    p.add_argument("--json", metavar="FILE", type=_output_file, help="write timings and the device description here")


def _add_compare(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help=".pte and/or .onnx files")
    p.add_argument("--reference", required=True, metavar="MODEL",
                   help="the PyTorch reference: a .pt2 (converted: errors in output steps) or file.py:function")
    p.add_argument("--inputs", required=True, metavar="FILE", help=".pt/.npz inputs, one or more batches")
    p.add_argument("--max-steps", type=_non_negative_float, default=None, metavar="K",
                   help="exit 1 when any output is off by more than K quantization steps")
    p.add_argument("--json", metavar="FILE", type=_output_file, help="write the comparison here")
    _add_trust(p)


def _add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", default="out/demo", metavar="DIR", type=_output_dir, help="default: out/demo")
    p.add_argument("--epochs", type=_positive, default=None, help=argparse.SUPPRESS)  # tests: a shorter run
    p.add_argument("--bench-iters", type=_positive, default=None, help=argparse.SUPPRESS)


COMMANDS: dict[str, Command] = {
    "export": Command("quantize a model and write model.pte / model.onnx / report.json", _add_export,
                      "pt2e_int8.app.commands.export:run"),
    "bench": Command("latency of .pte / .onnx files on this device", _add_bench, "pt2e_int8.app.commands.bench:run"),
    "compare": Command("numerical parity of artifacts against the PyTorch reference", _add_compare,
                       "pt2e_int8.app.commands.compare:run"),
    "debug": Command("per-layer error table, artifact divergence and sensitivity of a model's int8 version",
                     _add_debug, "pt2e_int8.app.commands.debug:run"),
    "demo": Command("train, quantize (PTQ static, dynamic, QAT), export, run and bench a digits classifier",
                    _add_demo, "pt2e_int8.app.commands.demo:run"),
}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _output_dir(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: pass the directory for the outputs, e.g. -o out")
    return text


def _output_file(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: pass a file path, e.g. --json result.json")
    return text


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pt2e-int8",
                                     description="int8 export for edge CPUs: .pte (ExecuTorch XNNPACK) and QDQ .onnx")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and library warnings")
    # Accepted after the command too; SUPPRESS keeps `pt2e-int8 --debug export ...` from being reset
    # to False by the subcommand's default.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks and library warnings")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        cmd.add_arguments(sub.add_parser(name, help=cmd.help, description=cmd.help, parents=[common]))
    return parser


class _GraphDumpFilter:
    """stderr minus the partial FX graphs torch.export prints on each failed trace attempt.

    torch/export/_trace.py print()s `e.partial_fx_graph` before re-raising; pt2e-int8 turns the
    error into one paragraph, and the dump (dozens of lines per attempt) only buries it.
    """

    def __init__(self, stream) -> None:
        self.stream, self.dropped = stream, False

    def write(self, text: str) -> int:
        dump = text.lstrip("\n").startswith("def forward(self") or (self.dropped and text == "\n")
        self.dropped = dump
        return len(text) if dump else self.stream.write(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # One line a user can act on, not the source line of the library that warned.
    print(f"pt2e-int8: warning: {message}", file=file or sys.stderr)


def _quiet_before_import() -> None:
    quiet_third_party()
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # Library warnings (deprecations inside torch/torchao) are noise to a user of the command;
    # pt2e-int8's own warnings still show.
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=r"pt2e_int8\..*")
    warnings.showwarning = _show_warning
    sys.stderr = _GraphDumpFilter(sys.stderr)


def _quiet_after_import() -> None:
    # After the command's imports: torch sets its loggers' levels when it is imported, so
    # this must come later (else torch.export.load's logged tracebacks reach the terminal).
    if "torch" in sys.modules:
        sys.modules["torch"]._logging.set_logs(all=logging.ERROR)


class Terminated(BaseException):  # noqa: N818  (like KeyboardInterrupt: not an error of the run)
    """SIGTERM, raised in the main thread so that staging folders are removed on the way out."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    def handler(signum, frame):
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (an embedding application): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `pt2e-int8` console script; also callable in-process (state is restored)."""
    args = build_parser().parse_args(argv)
    stderr = sys.stderr
    with warnings.catch_warnings(), _sigterm_raises():
        if not args.debug:
            _quiet_before_import()
        try:
            return _dispatch(args)
        finally:
            sys.stderr = stderr


def _dispatch(args: argparse.Namespace) -> int:
    prog = f"pt2e-int8 {args.command}"
    module_name, _, func_name = COMMANDS[args.command].target.partition(":")
    try:
        run = getattr(importlib.import_module(module_name), func_name)
        if not args.debug:
            _quiet_after_import()
        return run(args)
    except UserInputError as e:
        if args.debug:
            traceback.print_exc()
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as e:  # argparse is done: only the user's model code (or a library) exits here
        if args.debug:
            traceback.print_exc()
        print(f"{prog}: error: code run by the command called sys.exit({e.code!r}) (the model's forward or "
              "factory, most likely). Models must return outputs, not exit; add --debug to see where.",
              file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; no output was half-written", file=sys.stderr)
        return 130
    except Terminated:
        print(f"{prog}: terminated (SIGTERM); no output was half-written", file=sys.stderr)
        return EXIT_TERMINATED
    except Pt2eInt8Error as e:  # a fault the tool detected and explained (a lowering that failed, ...)
        if args.debug:
            traceback.print_exc()
        print(f"{prog}: failed: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as e:  # noqa: BLE001  (the last line of defence: exit 1 with a readable line)
        if args.debug:
            traceback.print_exc()
        first = str(e).strip().splitlines()[0][:500] if str(e).strip() else ""
        print(f"{prog}: internal error: {type(e).__name__}: {first}. This is a bug in pt2e-int8 or a backend, "
              "not in your input; re-run with --debug for the traceback and report it.", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
