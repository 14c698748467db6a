"""``lop-bench data``: download, prepare, verify and locate the datasets of the streams.

Wired into the ``lop-bench`` command by :func:`add_cli`. Every subcommand's ``--help``
shows an example.
"""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

__all__ = ["add_cli", "cmd_download", "cmd_prepare", "cmd_verify", "cmd_path"]

DATASETS = ("mnist", "cifar100", "imagenet32")
"""Datasets the ``data`` subcommands know (more streams add theirs here)."""


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _allow(args: argparse.Namespace) -> bool | None:
    """``--allow-checksum-mismatch``: True when given, else None ($LOP_BENCH_ALLOW_CHECKSUM_MISMATCH
    decides)."""
    return True if getattr(args, "allow_checksum_mismatch", False) else None


def cmd_download(args: argparse.Namespace) -> int:
    """``lop-bench data download mnist|cifar100``: fetch into the cache (or ``--root``) and
    verify."""
    allow = _allow(args)
    if args.name == "cifar100":
        from lop_bench.data import cifar100

        hf_id = args.hf_id or cifar100.HF_ID
        where = cifar100.download_cifar100(args.root, source=args.source, hf_id=hf_id,
                                           allow_checksum_mismatch=allow)
        print(f"CIFAR-100 is in {where}")
        # the hub copy is saved under the root, where "auto" reads it without the network
        return _verify("cifar100", args.root, "auto" if args.source == "hf" else args.source,
                       hf_id, allow)
    from lop_bench.data.mnist import HF_ID, download_mnist

    hf_id = args.hf_id or HF_ID
    where = download_mnist(args.root, source=args.source, hf_id=hf_id,
                           allow_checksum_mismatch=allow)
    print(f"MNIST is in {where}")
    return _verify("mnist", args.root, args.source, hf_id, allow)


def cmd_prepare(args: argparse.Namespace) -> int:
    """``lop-bench data prepare imagenet32 --from DIR``: build the per-class layout."""
    from lop_bench.data.imagenet import prepare_imagenet32

    where = prepare_imagenet32(args.source_dir, args.root, progress=not args.no_progress)
    print(f"ImageNet 32x32 per-class layout written to {where}")
    return _verify("imagenet32", args.root, "npy", None, None)


def cmd_verify(args: argparse.Namespace) -> int:
    """``lop-bench data verify``: checksums of the archives, fingerprint of the arrays."""
    return _verify(args.name or "mnist", args.root, args.source, args.hf_id, _allow(args))


def cmd_path(args: argparse.Namespace) -> int:
    """``lop-bench data path [NAME]``: print the cache directory (or where NAME lives in it)."""
    from lop_bench.data.cache import data_root

    root = data_root(args.root)
    if getattr(args, "name", None) == "imagenet32":
        root = root / "imagenet32" / "classes"
    elif getattr(args, "name", None) == "cifar100":
        from lop_bench.data.cifar100 import FOLDER

        root = root / FOLDER
    elif getattr(args, "name", None) == "mnist":
        root = root / "MNIST"
    print(root)
    return 0


def _verify(name: str, root: Any, source: str, hf_id: str | None, allow: bool | None) -> int:
    """Load dataset ``name`` as a stream would, without the memory cache, and print what
    :meth:`~lop_bench.data._common.LoadedData.verify` reports; returns its status."""
    from lop_bench.data import cifar100, imagenet, mnist
    from lop_bench.errors import InvalidConfigError

    module = {"mnist": mnist, "cifar100": cifar100, "imagenet32": imagenet}[name]
    if source not in module.SOURCES:
        raise InvalidConfigError(f"--source for {name} must be one of "
                                 f"{', '.join(module.SOURCES)}, got {source!r}.")
    hf_id = hf_id or module.HF_ID
    if name == "imagenet32":
        data = imagenet.load_imagenet32(root, source, hf_id=hf_id, use_cache=False, progress=True)
    else:
        load = mnist.load_mnist if name == "mnist" else cifar100.load_cifar100
        data = load(root, source, hf_id=hf_id, use_cache=False, allow_checksum_mismatch=allow)
    status, lines = data.verify()
    print("\n".join(lines))
    return status


def add_cli(subparsers: Any) -> None:
    """Add ``data download|prepare|verify|path`` to the ``lop-bench`` subcommands."""
    from lop_bench.data._common import ALLOW_MISMATCH_ENV_VAR
    from lop_bench.data.cache import DEFAULT_ROOT, ENV_VAR
    from lop_bench.data.cifar100 import HF_ID as CIFAR_HF_ID
    from lop_bench.data.imagenet import HF_ID as IMAGENET_HF_ID
    from lop_bench.data.imagenet import SOURCES as IMAGENET_SOURCES
    from lop_bench.data.mnist import HF_ID, SOURCES

    root_help = f"data directory (default: ${ENV_VAR}, else {DEFAULT_ROOT})"
    allow_help = ("read files whose md5 differs from the published one (a copy that differs on "
                  "purpose) and list them; without it that is an error. For `make` and "
                  f"`lop-bench run`: {ALLOW_MISMATCH_ENV_VAR}=1")
    dp = subparsers.add_parser(
        "data", help="download, verify and locate datasets", formatter_class=_formatter,
        description=f"Datasets live in ${ENV_VAR} (default {DEFAULT_ROOT}).",
        epilog=textwrap.dedent("""\
            examples:
              lop-bench data download mnist
              lop-bench data download cifar100
              lop-bench data prepare imagenet32 --from ~/Imagenet32_train
              lop-bench data verify
              lop-bench data verify cifar100
              lop-bench data verify imagenet32
              lop-bench data path
        """))
    sub = dp.add_subparsers(dest="data_command", metavar="ACTION")

    sp = sub.add_parser(
        "download", help="fetch a dataset into the data directory, then verify it",
        formatter_class=_formatter,
        description="Fetch a dataset with torchvision (MNIST: the IDX archives, md5-checked, "
                    "into ROOT/MNIST/raw; CIFAR-100: the python-pickle tarball, md5-checked, "
                    "extracted to ROOT/cifar-100-python) or with Hugging Face datasets "
                    "(--source hf: saved to ROOT/MNIST/hf or ROOT/CIFAR100/hf). Nothing is "
                    "fetched when the files are already there. Downsampled ImageNet cannot be "
                    "downloaded by lop-bench (it needs an image-net.org account): fetch "
                    "Imagenet32 yourself, then `lop-bench data prepare imagenet32`.",
        epilog=textwrap.dedent("""\
            examples:
              lop-bench data download mnist
              lop-bench data download mnist --root /data/lop_bench
              lop-bench data download mnist --source hf
              lop-bench data download cifar100
              lop-bench data download cifar100 --source hf --hf-id uoft-cs/cifar100
        """))
    sp.add_argument("name", choices=("mnist", "cifar100"), metavar="NAME",
                    help="dataset: mnist or cifar100 (imagenet32: see `lop-bench data prepare`)")
    sp.add_argument("--root", help=root_help)
    sp.add_argument("--source", choices=("torchvision", "hf"), default="torchvision",
                    help="torchvision (default) or hf (Hugging Face datasets)")
    sp.add_argument("--hf-id", default=None,
                    help=f"hub id for --source hf (default: mnist {HF_ID}, cifar100 {CIFAR_HF_ID})")
    sp.add_argument("--allow-checksum-mismatch", action="store_true", help=allow_help)
    sp.set_defaults(func=cmd_download)

    sp = sub.add_parser(
        "prepare", help="convert a downloaded dataset into the layout the streams read",
        formatter_class=_formatter,
        description="Convert downsampled ImageNet 32x32 once into the per-class layout that "
                    "lop/ContinualImageNet-v0 reads: ROOT/imagenet32/classes/<c>.npy, uint8 "
                    "(700, 3, 32, 32), class c = the c-th wnid in sorted order; the first 700 "
                    "training images of each class in file order (rows 0..599 train, 600..699 "
                    "test). DIR holds the official Imagenet32 batches (train_data_batch_1..10, "
                    "pickle or .npz) or a Hugging Face copy of " + IMAGENET_HF_ID + " "
                    "(save_to_disk, or its parquet files); a hub id is loaded with datasets. "
                    "Files are written atomically; then the layout is verified.",
        epilog=textwrap.dedent("""\
            examples:
              lop-bench data prepare imagenet32 --from ~/Imagenet32_train
              lop-bench data prepare imagenet32 --from ~/imagenet32_npz --root /data/lop_bench
              lop-bench data prepare imagenet32 --from ~/hf/imagenet-1k-32x32
              lop-bench data prepare imagenet32 --from benjamin-paine/imagenet-1k-32x32
        """))
    sp.add_argument("name", choices=("imagenet32",), metavar="NAME", help="dataset: imagenet32")
    sp.add_argument("--from", dest="source_dir", required=True, metavar="DIR",
                    help="directory of the Imagenet32 batches or of a Hugging Face copy "
                         "(or a hub id)")
    sp.add_argument("--root", help=root_help)
    sp.add_argument("--no-progress", action="store_true", help="no progress bars")
    sp.set_defaults(func=cmd_prepare)

    sp = sub.add_parser(
        "verify", help="check a dataset's archives (md5) and print its fingerprint",
        formatter_class=_formatter,
        description="Load a dataset as the streams do: check the md5 of the published files "
                    "present (before reading them; a difference is an error unless "
                    "--allow-checksum-mismatch), decode the arrays (pickles with a restricted "
                    "unpickler that runs no code) and print their fingerprint (sha256 of the "
                    "decoded arrays, recorded in every result), and whether it is the official "
                    "one. Exit status 1 when it is known not to be.",
        epilog=textwrap.dedent("""\
            examples:
              lop-bench data verify
              lop-bench data verify mnist --root /data/lop_bench
              lop-bench data verify mnist --source dir --root ~/my_mnist_copy
              lop-bench data verify cifar100
              lop-bench data verify cifar100 --allow-checksum-mismatch --root ~/my_cifar
              lop-bench data verify cifar100 --source hf --root /data/lop_bench
              lop-bench data verify imagenet32
              lop-bench data verify imagenet32 --source imagenet32 --root ~/Imagenet32_train
        """))
    sp.add_argument("name", nargs="?", choices=DATASETS, default="mnist", metavar="NAME",
                    help="dataset: mnist (default), cifar100 or imagenet32")
    sp.add_argument("--root", help=root_help + "; with --source dir, the copy to check")
    sources = tuple(dict.fromkeys(SOURCES + IMAGENET_SOURCES))
    sp.add_argument("--source", choices=sources, default="auto",
                    help="where to read it: auto (default); mnist and cifar100: torchvision, hf "
                         "or dir; imagenet32: npy, imagenet32 or hf")
    sp.add_argument("--hf-id", default=None,
                    help=f"hub id for --source hf (default: mnist {HF_ID}; cifar100 "
                         f"{CIFAR_HF_ID}; imagenet32: {IMAGENET_HF_ID})")
    sp.add_argument("--allow-checksum-mismatch", action="store_true", help=allow_help)
    sp.set_defaults(func=cmd_verify)

    sp = sub.add_parser(
        "path", help="print the data directory", formatter_class=_formatter,
        epilog=textwrap.dedent(f"""\
            examples:
              lop-bench data path
              {ENV_VAR}=/data/lop_bench lop-bench data path
              lop-bench data path cifar100
              lop-bench data path imagenet32
        """))
    sp.add_argument("name", nargs="?", choices=DATASETS, default=None, metavar="NAME",
                    help="print where this dataset's files live (mnist: ROOT/MNIST; cifar100: "
                         "ROOT/cifar-100-python; imagenet32: its per-class layout) instead of "
                         "the data directory")
    sp.add_argument("--root", help=root_help)
    sp.set_defaults(func=cmd_path)

    def _help(args: argparse.Namespace) -> int:
        dp.print_help()
        return 2

    dp.set_defaults(func=_help)
