"""`flowsentinel <command>`: one entry point, a sub-command per service and tool.

Each command lives in its own module and is imported only when called, so `flowsentinel stack status`
does not pay for TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# command -> (module with add_arguments(parser) and run(args) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "stack": ("services.common.stack_cli", "start, stop or show the embedded local stack (Tansu broker, Redis)"),
    "replay": ("services.collector.replay", "replay dataset flow files into the flows topic"),
    "collector": ("services.collector.listener", "run the UDP NetFlow v5/v9/IPFIX collector into the flows topic"),
    "decode": ("services.collector.decode_cli", "decode NetFlow/IPFIX packets from pcap or raw files, offline"),
    "featurizer": ("services.featurizer.app", "run the featurizer: flows -> per-host windows"),
    "scorer": ("services.scorer.service", "run the scorer: host windows -> scores and anomalies"),
    "alerter": ("services.alerter.service", "run the alerter: anomalies -> incidents -> sinks"),
    "train": ("training.train_cli", "train and export the autoencoder and the LSTM"),
    "compare": ("training.compare_cli", "train and evaluate every detector on leakage-free splits; write a report"),
    "evaluate": ("training.evaluate_cli", "evaluate exported models and the rule IDS on labelled files"),
    "demo": ("services.demo", "run the whole pipeline on the bundled sample and print a summary"),
}


def _startup_errors() -> tuple[type[BaseException], ...]:
    import pydantic
    import yaml

    from services.common.preflight import PreflightError

    return (PreflightError, pydantic.ValidationError, yaml.YAMLError, FileNotFoundError, NotADirectoryError)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter is not for operators
    parser = argparse.ArgumentParser(prog="flowsentinel", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    modules = {}
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == chosen:  # import only the module that runs
            modules[name] = importlib.import_module(module)
            modules[name].add_arguments(p)
    args = parser.parse_args(argv)
    STARTUP_ERRORS = _startup_errors()  # noqa: N806 - a constant, built only once a command runs
    try:
        return int(modules[args.command].run(args) or 0)
    except STARTUP_ERRORS as exc:
        # Configuration and missing dependencies are the operator's to fix: one line says what, the
        # traceback is for developers (FLOWSENTINEL_LOG_LEVEL=DEBUG).
        if os.environ.get("FLOWSENTINEL_LOG_LEVEL", "").upper() == "DEBUG":
            raise
        print(f"flowsentinel {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
