"""`sidecar normalizer check HOST:PORT --model NAME`: conformance of a model team's normaliser."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from normalizer_svc.conformance import CASES, run_checks
from sidecar_core.security.mesh_tls import from_folder


def build_parser(parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser
                 ) -> argparse.ArgumentParser:
    parser = parser_class(
        prog="sidecar normalizer check",
        description="Check that a NormalizerService at HOST:PORT honours the Normalizer "
                    "contract for one model.")
    parser.add_argument("target", metavar="HOST:PORT")
    parser.add_argument("--model", required=True, help=f"model name ({', '.join(CASES)})")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per call")
    parser.add_argument("--credentials", type=Path, default=None, metavar="DIR",
                        help="mutual TLS with ca.crt and one client certificate in DIR (a "
                        "grpcs:// normaliser, or the sidecar's own: DATA_DIR/tls with the "
                        "operator's); default: plaintext")
    return parser


def run(args: argparse.Namespace) -> int:
    """Runs the checks, prints one PASS/FAIL line each; 0 when all pass, 1 otherwise."""
    credentials = None
    if args.credentials is not None:
        folder = args.credentials
        credentials = (from_folder(folder, "operator") if (folder / "operator.crt").exists()
                       else from_folder(folder))
    results = asyncio.run(run_checks(args.target, args.model, args.timeout, credentials))
    for result in results:
        print(result.line(), flush=True)
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed}/{len(results)} checks passed for {args.model} at "
          f"{args.target}")
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    """Parses `HOST:PORT --model NAME` and runs the checks (usage error: 2)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # usage error (2) or --help (0): return, do not exit the caller
        return int(exc.code or 0)
    return run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
