"""``lop-bench data``: download, verify and locate the datasets of the streams.

Wired into the ``lop-bench`` command by :func:`add_cli`. Every subcommand's ``--help``
shows an example.
"""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

__all__ = ["add_cli", "cmd_download", "cmd_verify", "cmd_path"]

DATASETS = ("mnist",)
"""Datasets the ``data`` subcommands know (more streams add theirs here)."""


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def cmd_download(args: argparse.Namespace) -> int:
    """``lop-bench data download mnist``: fetch into the cache (or ``--root``) and verify."""
    from lop_bench.data.mnist import download_mnist

    where = download_mnist(args.root, source=args.source, hf_id=args.hf_id)
    print(f"MNIST is in {where}")
    return _verify(args.root, args.source, args.hf_id)


def cmd_verify(args: argparse.Namespace) -> int:
    """``lop-bench data verify``: checksums of the archives, fingerprint of the arrays."""
    return _verify(args.root, args.source, args.hf_id)


def cmd_path(args: argparse.Namespace) -> int:
    """``lop-bench data path``: print the cache directory."""
    from lop_bench.data.cache import data_root

    print(data_root(args.root))
    return 0


def _verify(root: Any, source: str, hf_id: str) -> int:
    from lop_bench.data import mnist

    data = mnist.load_mnist(root, source, hf_id=hf_id, use_cache=False)
    print(f"MNIST {data.split}: {len(data):,} images, read from {data.location} ({data.source})")
    if data.checked_archives:
        print(f"  md5 ok: {', '.join(data.checked_archives)}")
    else:
        print("  md5: no published .gz archive here to check (the fingerprint identifies the data)")
    print(f"  fingerprint: {data.fingerprint}")
    official = mnist.MNIST_TRAIN_FINGERPRINT
    if official is None:
        print("  official fingerprint: not recorded in this lop-bench version "
              "(lop_bench.data.mnist.MNIST_TRAIN_FINGERPRINT); results on this data record "
              "the fingerprint above and are not ranked yet.")
        return 0
    if data.fingerprint == official:
        print("  the official MNIST training set: results on it can be ranked.")
        return 0
    print(f"  NOT the official training set (official: {official}): runs work, but their "
          "results record this fingerprint and the leaderboard does not rank them.")
    return 1


def add_cli(subparsers: Any) -> None:
    """Add ``data download|verify|path`` to the ``lop-bench`` subcommands."""
    from lop_bench.data.cache import DEFAULT_ROOT, ENV_VAR
    from lop_bench.data.mnist import HF_ID, SOURCES

    root_help = f"data directory (default: ${ENV_VAR}, else {DEFAULT_ROOT})"
    dp = subparsers.add_parser(
        "data", help="download, verify and locate datasets", formatter_class=_formatter,
        description=f"Datasets live in ${ENV_VAR} (default {DEFAULT_ROOT}).",
        epilog=textwrap.dedent("""\
            examples:
              lop-bench data download mnist
              lop-bench data verify
              lop-bench data path
        """))
    sub = dp.add_subparsers(dest="data_command", metavar="ACTION")

    sp = sub.add_parser(
        "download", help="fetch a dataset into the data directory, then verify it",
        formatter_class=_formatter,
        description="Fetch a dataset: MNIST with torchvision (the IDX archives, md5-checked, "
                    "into ROOT/MNIST/raw) or with Hugging Face datasets (--source hf: saved to "
                    "ROOT/MNIST/hf). Nothing is fetched when the files are already there.",
        epilog=textwrap.dedent("""\
            examples:
              lop-bench data download mnist
              lop-bench data download mnist --root /data/lop_bench
              lop-bench data download mnist --source hf
        """))
    sp.add_argument("name", choices=DATASETS, metavar="NAME", help="dataset: mnist")
    sp.add_argument("--root", help=root_help)
    sp.add_argument("--source", choices=("torchvision", "hf"), default="torchvision",
                    help="torchvision (default) or hf (Hugging Face datasets)")
    sp.add_argument("--hf-id", default=HF_ID, help=f"hub id for --source hf (default: {HF_ID})")
    sp.set_defaults(func=cmd_download)

    sp = sub.add_parser(
        "verify", help="check a dataset's archives (md5) and print its fingerprint",
        formatter_class=_formatter,
        description="Load a dataset as the streams do: check the md5 of the published archives "
                    "present, decode the arrays and print their fingerprint (sha256 of the "
                    "decoded arrays, recorded in every result), and whether it is the official "
                    "one. Exit status 1 when it is known not to be.",
        epilog=textwrap.dedent("""\
            examples:
              lop-bench data verify
              lop-bench data verify mnist --root /data/lop_bench
              lop-bench data verify mnist --source dir --root ~/my_mnist_copy
        """))
    sp.add_argument("name", nargs="?", choices=DATASETS, default="mnist", metavar="NAME",
                    help="dataset (default: mnist)")
    sp.add_argument("--root", help=root_help + "; with --source dir, the copy to check")
    sp.add_argument("--source", choices=SOURCES, default="auto",
                    help="where to read it: auto (default), torchvision, hf or dir")
    sp.add_argument("--hf-id", default=HF_ID, help=f"hub id for --source hf (default: {HF_ID})")
    sp.set_defaults(func=cmd_verify)

    sp = sub.add_parser(
        "path", help="print the data directory", formatter_class=_formatter,
        epilog=textwrap.dedent(f"""\
            examples:
              lop-bench data path
              {ENV_VAR}=/data/lop_bench lop-bench data path
        """))
    sp.add_argument("--root", help=root_help)
    sp.set_defaults(func=cmd_path)

    def _help(args: argparse.Namespace) -> int:
        dp.print_help()
        return 2

    dp.set_defaults(func=_help)
