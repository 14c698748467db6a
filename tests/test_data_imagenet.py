"""Downsampled ImageNet 32x32 loaders: the per-class layout, Imagenet32 batches (pickle and
npz) and Hugging Face copies (save_to_disk and parquet) give the same classes; `prepare`
converts; class files of any integer or float dtype holding pixel values are read as uint8;
malformed inputs give named errors; poisoned files are refused and never run."""

import argparse
import hashlib
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from lop_bench.data import MEMORY
from lop_bench.data.cli import add_cli
from lop_bench.data.imagenet import load_imagenet32, prepare_imagenet32, read_batch
from lop_bench.data.imagenet_wnids import CLSLOC_TO_SORTED, MAP_CLSLOC_WNIDS, WNIDS
from lop_bench.errors import (
    ChecksumError,
    DatasetNotFoundError,
    DatasetReadError,
    InvalidConfigError,
    UnsafeDataError,
)
from tests.imagenet_fixtures import (
    clsloc_label,
    fake_imagenet,
    file_order,
    write_hf_parquet,
    write_hf_saved,
    write_imagenet32,
    write_layout_root,
    write_npy_layout,
)
from tests.poison import PAYLOADS, payload, poisoned

K, N = 4, 30
A = fake_imagenet(K, N)
# Interleaved file order; class 1 has 5 more images at the very end: the first N of each
# class in file order are A, the extra ones are dropped (every class is cut to N).
X, Y = file_order(A, extra={1: fake_imagenet(1, 5, seed=9)[0]})
FP = "sha256:" + hashlib.sha256(A.tobytes()).hexdigest()
PREPARE = "lop-bench data prepare imagenet32 --from DIR"


@pytest.fixture(autouse=True)
def _fresh_cache():
    MEMORY.clear()
    yield
    MEMORY.clear()


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    base = tmp_path_factory.mktemp("imagenet32")
    return {
        "npy": write_layout_root(base / "npy", A),
        "pickle": write_imagenet32(base / "pickle", X, Y),
        "npz": write_imagenet32(base / "npz", X, Y, fmt="npz", num_batches=3),
        "saved": write_hf_saved(base / "saved", X, Y),
        "parquet": write_hf_parquet(base / "parquet", X, Y),
    }


SOURCE_OF = {"npy": "npy", "pickle": "imagenet32", "npz": "imagenet32", "saved": "hf", "parquet": "hf"}


# -- class identity ----------------------------------------------------------------------
def test_wnid_orders():
    assert len(WNIDS) == len(set(WNIDS)) == 1000 and list(WNIDS) == sorted(WNIDS)
    assert WNIDS[0] == "n01440764" and WNIDS[-1] == "n15075141"  # tench ... toilet tissue
    assert MAP_CLSLOC_WNIDS[:3] == ("n02119789", "n02100735", "n02110185")  # kit fox, ...
    assert MAP_CLSLOC_WNIDS[-1] == "n03255030"  # 1000 dumbbell
    assert sorted(CLSLOC_TO_SORTED) == list(range(1000))
    assert CLSLOC_TO_SORTED[:3] == (278, 212, 250)  # kit fox is class 278 of ImageFolder
    # Entries of the devkit's map_clsloc.txt ("wnid label name"), independent of the table's
    # own sorting: label -> wnid -> ImageFolder / Hugging Face class.
    devkit = {449: ("n01440764", 0),  # tench
              450: ("n01443537", 1),  # goldfish
              442: ("n01484850", 2),  # great_white_shark
              443: ("n01491361", 3),  # tiger_shark
              831: ("n04591713", 907),  # wine_bottle
              889: ("n15075141", 999),  # toilet_tissue
              999: ("n07831146", 959)}  # carbonara
    for label, (wnid, cls) in devkit.items():
        assert MAP_CLSLOC_WNIDS[label - 1] == wnid and WNIDS[cls] == wnid
        assert CLSLOC_TO_SORTED[label - 1] == cls


def test_imagenet32_labels_map_to_sorted_classes(tmp_path):
    data = np.arange(3 * 3072, dtype=np.int64).astype(np.uint8).reshape(3, 3072)
    with open(tmp_path / "train_data_batch_1", "wb") as f:
        pickle.dump({"data": data, "labels": [1, 2, 1000]}, f, protocol=2)
    x, y = read_batch(tmp_path / "train_data_batch_1")
    assert y.tolist() == [278, 212, WNIDS.index("n03255030")] and y.dtype == np.int64
    # planar R, G, B rows like CIFAR: the first 1024 bytes are the red plane
    assert x.shape == (3, 3, 32, 32) and np.array_equal(x[0, 0].ravel(), data[0, :1024])


# -- the three formats give the same thing -----------------------------------------------
def test_the_fixtures_use_the_devkit_labels(copies):
    """The batches hold the devkit's 1-based labels of classes 0..3 (tench, goldfish, great
    white shark, tiger shark: 449, 450, 442, 443), not labels derived from lop-bench's own
    table, so the format test below checks the mapping rather than restating it."""
    x, y = read_batch(copies["pickle"] / "train_data_batch_1")
    with open(copies["pickle"] / "train_data_batch_1", "rb") as f:
        raw = np.asarray(pickle.load(f, encoding="latin1")["labels"])
    assert sorted(set(raw.tolist())) == [442, 443, 449, 450]
    devkit_to_class = {449: 0, 450: 1, 442: 2, 443: 3}
    assert y.tolist() == [devkit_to_class[int(v)] for v in raw]


@pytest.mark.parametrize("fmt", list(SOURCE_OF))
def test_every_format_gives_the_same_classes(copies, fmt):
    data = load_imagenet32(copies[fmt], SOURCE_OF[fmt])
    assert (data.num_classes, data.images_per_class, len(data)) == (K, N, K)
    assert data.source == SOURCE_OF[fmt]
    for c in range(K):
        x = data.class_images(c)
        assert x.dtype == np.uint8 and x.shape == (N, 3, 32, 32) and not x.flags.writeable
        assert np.array_equal(x, A[c]), f"class {c} differs in format {fmt}"
        assert data.wnid(c) == WNIDS[c]
    assert data.fingerprint == FP


@pytest.mark.parametrize("fmt", list(SOURCE_OF))
def test_auto_finds_every_format(copies, fmt):
    data = load_imagenet32(copies[fmt])
    assert data.source == SOURCE_OF[fmt] and data.fingerprint == FP


def test_the_layout_is_memory_mapped_and_its_fingerprint_cached(tmp_path):
    d = write_npy_layout(tmp_path / "classes", A)
    data = load_imagenet32(tmp_path, "npy")
    assert isinstance(data.class_images(0), np.memmap)
    saved = json.loads((d / "fingerprint.json").read_text())
    assert saved["fingerprint"] == FP and len(saved["files"]) == K
    # a changed file changes the fingerprint (the cache is keyed by size and mtime)
    B = A.copy()
    B[2, 0, 0, 0, 0] ^= 1
    np.save(d / "2.npy", B[2])
    st = (d / "2.npy").stat()
    os.utime(d / "2.npy", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    MEMORY.clear()
    assert load_imagenet32(tmp_path, "npy").fingerprint == "sha256:" + hashlib.sha256(B.tobytes()).hexdigest()
    # a forged cache entry is ignored with use_cache=False (what `data verify` does)
    saved = json.loads((d / "fingerprint.json").read_text())
    (d / "fingerprint.json").write_text(json.dumps({**saved, "fingerprint": "sha256:" + "0" * 64}))
    MEMORY.clear()
    assert load_imagenet32(tmp_path, "npy").fingerprint == "sha256:" + "0" * 64
    assert load_imagenet32(tmp_path, "npy", use_cache=False).fingerprint != "sha256:" + "0" * 64


def test_a_class_with_fewer_images_cuts_every_class(tmp_path):
    keep = ~((Y == 2) & (np.cumsum(Y == 2) > 25))  # class 2 keeps its first 25 images
    write_imagenet32(tmp_path, X[keep], Y[keep])
    data = load_imagenet32(tmp_path, "imagenet32")
    assert data.images_per_class == 25
    assert all(np.array_equal(data.class_images(c), A[c, :25]) for c in range(K))


# -- prepare -----------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["pickle", "npz", "saved", "parquet"])
def test_prepare_converts_into_the_layout(copies, fmt, tmp_path):
    out = prepare_imagenet32(copies[fmt], tmp_path, progress=False)
    assert out == tmp_path / "imagenet32" / "classes"
    names = sorted(p.name for p in out.iterdir())
    assert names == ["0.npy", "1.npy", "2.npy", "3.npy", "fingerprint.json", "wnids.txt"]
    assert (out / "wnids.txt").read_text().split() == list(WNIDS[:K])
    for c in range(K):
        assert np.array_equal(np.load(out / f"{c}.npy"), A[c])
    data = load_imagenet32(tmp_path)
    assert data.source == "npy" and data.fingerprint == FP
    # preparing a smaller copy over it removes the classes it does not have
    write_imagenet32(tmp_path / "small", X[Y < 2], Y[Y < 2])
    prepare_imagenet32(tmp_path / "small", tmp_path, progress=False)
    assert load_imagenet32(tmp_path, use_cache=False).num_classes == 2


def test_prepare_finds_the_official_folder_name(tmp_path):
    write_imagenet32(tmp_path / "Imagenet32_train", X, Y, fmt="npz")
    prepare_imagenet32(tmp_path, tmp_path / "out", progress=False)
    assert load_imagenet32(tmp_path / "out").fingerprint == FP


def test_prepare_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="no such directory"):
        prepare_imagenet32(tmp_path / "nope", tmp_path, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="neither Imagenet32 batches"):
        prepare_imagenet32(tmp_path / "empty", tmp_path, progress=False)


# -- errors ------------------------------------------------------------------------------
def test_missing_data_names_the_prepare_command(tmp_path, monkeypatch):
    monkeypatch.setenv("LOP_BENCH_DATA", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match=PREPARE) as err:
        load_imagenet32()
    assert str(tmp_path / "imagenet32" / "classes") in str(err.value)
    with pytest.raises(DatasetNotFoundError, match=f"{PREPARE} --root {tmp_path / 'x'}"):
        load_imagenet32(tmp_path / "x")
    with pytest.raises(InvalidConfigError, match="source must be one of"):
        load_imagenet32(tmp_path, "npz")


def test_malformed_class_files_are_named(tmp_path):
    d = write_npy_layout(tmp_path / "classes", A)
    for dtype in (bool, np.complex64, "U3"):
        np.save(d / "1.npy", A[1].astype(dtype))
        with pytest.raises(ChecksumError, match=r"1\.npy: dtype .*, expected pixel values 0\.\.255 "
                                                r"as uint8 \(or another integer or float dtype"):
            load_imagenet32(tmp_path, "npy")
    np.save(d / "1.npy", A[1].transpose(0, 2, 3, 1))
    with pytest.raises(ChecksumError, match=r"1\.npy: shape \(30, 32, 32, 3\).*channels last"):
        load_imagenet32(tmp_path, "npy")
    np.save(d / "1.npy", A[1, :20])
    with pytest.raises(ChecksumError, match="20 images, but 0.npy has 30"):
        load_imagenet32(tmp_path, "npy")
    np.save(d / "1.npy", A[1])
    raw = (d / "1.npy").read_bytes()
    (d / "1.npy").write_bytes(raw[:-100])
    with pytest.raises(ChecksumError, match=r"1\.npy: truncated"):
        load_imagenet32(tmp_path, "npy")
    (d / "1.npy").unlink()
    with pytest.raises(DatasetNotFoundError, match=rf"missing classes: 1\.npy \({WNIDS[1]}\).*{PREPARE}"):
        load_imagenet32(tmp_path, "npy")


def _batch(path, **d):
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)


def test_malformed_batches_are_named(tmp_path):
    p = tmp_path / "train_data_batch_1"
    data = X.reshape(len(X), -1)[:10]
    labels = [clsloc_label(int(c)) for c in Y[:10]]
    _batch(p, data=data, labels=[0] + labels[1:])
    with pytest.raises(ChecksumError, match=r"train_data_batch_1: labels range over 0\.\.\d+, expected 1\.\.1000"):
        load_imagenet32(tmp_path, "imagenet32")
    _batch(p, data=data, labels=labels[:-1] + [1001])
    with pytest.raises(ChecksumError, match="expected 1..1000"):
        load_imagenet32(tmp_path, "imagenet32")
    _batch(p, data=data.astype(np.int64), labels=labels)
    with pytest.raises(ChecksumError, match="'data' is int64, expected uint8"):
        load_imagenet32(tmp_path, "imagenet32")
    _batch(p, data=np.zeros((10, 12288), np.uint8), labels=labels)
    with pytest.raises(ChecksumError, match=r"shape \(10, 12288\), expected \(N, 3072\)"):
        load_imagenet32(tmp_path, "imagenet32")
    _batch(p, data=data)
    with pytest.raises(ChecksumError, match="expected 'data' and 'labels'"):
        load_imagenet32(tmp_path, "imagenet32")
    p.write_bytes(pickle.dumps({"data": os.system}))  # only plain data is unpickled
    with pytest.raises(UnsafeDataError, match="train_data_batch_1: the pickle asks for posix.system"):
        load_imagenet32(tmp_path, "imagenet32")
    p.write_bytes(b"not a pickle")
    with pytest.raises(ChecksumError, match="not a readable Imagenet32 batch"):
        load_imagenet32(tmp_path, "imagenet32")


# -- the paper's own files: any integer or float dtype holding pixel values (issue 18) ------
@pytest.mark.parametrize("dtype", [np.int64, np.int16, np.uint16, np.int32, ">i4", np.float16,
                                   np.float32, np.float64, ">f8"])
def test_class_files_of_any_integer_or_float_dtype_with_pixel_values_are_read_as_uint8(
        tmp_path, dtype):
    d = write_npy_layout(tmp_path / "classes", A)
    for c in (1, 3):
        np.save(d / f"{c}.npy", A[c].astype(dtype))
    data = load_imagenet32(tmp_path, "npy")
    assert data.fingerprint == FP  # the same images as the uint8 files
    for c in range(K):
        x = data.class_images(c)
        assert x.dtype == np.uint8 and np.array_equal(x, A[c]) and not x.flags.writeable


@pytest.mark.parametrize(("values", "match"), [
    (lambda a: a.astype(np.float32) + 0.5, r"float32 value \d+\.5 at image 0.*whole numbers"),
    (lambda a: a.astype(np.float32) / 255, r"float32 value .*normalized to 0\.\.1: multiply by 255"),
    (lambda a: np.where(a == a.max(), np.nan, a.astype(np.float64)), "float64 value nan"),
    (lambda a: np.where(a == a.max(), np.inf, a.astype(np.float64)), "float64 value inf"),
    (lambda a: a.astype(np.int16) - 1, r"int16 value -1 at image \d+, index \(\d+, \d+, \d+\)"),
    (lambda a: a.astype(np.int64) + 1, "int64 value 256"),
])
def test_class_files_with_other_values_are_refused_naming_the_file(tmp_path, values, match):
    d = write_npy_layout(tmp_path / "classes", A)
    np.save(d / "2.npy", values(A[2]))
    with pytest.raises(ChecksumError, match=match) as err:
        load_imagenet32(tmp_path, "npy")
    assert str(d / "2.npy") in str(err.value) and PREPARE in str(err.value)


def test_a_bad_value_is_caught_when_the_class_is_opened_even_with_a_cached_fingerprint(tmp_path):
    d = write_npy_layout(tmp_path / "classes", A)
    np.save(d / "2.npy", A[2].astype(np.float32) + 0.25)
    stat = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(
        d.glob("*.npy"), key=lambda p: int(p.stem))]
    (d / "fingerprint.json").write_text(json.dumps({"fingerprint": FP, "files": stat}))
    data = load_imagenet32(tmp_path, "npy")  # the cached fingerprint: nothing read yet
    assert np.array_equal(data.class_images(1), A[1])
    with pytest.raises(ChecksumError, match=r"2\.npy: float32 value"):
        data.class_images(2)


# -- poisoned files: refused, never run ---------------------------------------------------
@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("kind", PAYLOADS)
def test_a_poisoned_batch_never_runs(tmp_path, kind, protocol):
    marker = tmp_path / "ran"
    write_imagenet32(tmp_path / "b", X, Y, num_batches=2)
    path = tmp_path / "b" / "train_data_batch_2"
    labels = [clsloc_label(int(c)) for c in Y[:10]]
    path.write_bytes(poisoned({"labels": labels}, "data", marker, kind, protocol))
    with pytest.raises(UnsafeDataError) as err:
        load_imagenet32(tmp_path / "b", "imagenet32")
    assert str(path) in str(err.value) and not marker.exists()
    with pytest.raises(UnsafeDataError):
        prepare_imagenet32(tmp_path / "b", tmp_path / "out", progress=False)
    with pytest.raises(UnsafeDataError):
        read_batch(path)
    assert not marker.exists() and not (tmp_path / "out" / "imagenet32").exists()


def test_pickled_objects_in_npz_and_npy_files_are_never_unpickled(tmp_path):
    marker = tmp_path / "ran"
    evil = np.array([payload(marker)], dtype=object)
    np.savez(tmp_path / "train_data_batch_1.npz", data=evil, labels=np.array([1]))
    with pytest.raises(ChecksumError, match="train_data_batch_1.npz: not a readable Imagenet32 batch"
                                            ".*allow_pickle=False"):
        load_imagenet32(tmp_path, "imagenet32")
    d = write_npy_layout(tmp_path / "classes", A)
    np.save(d / "1.npy", evil, allow_pickle=True)
    with pytest.raises(ChecksumError, match=r"1\.npy: dtype object"):
        load_imagenet32(tmp_path, "npy")
    assert not marker.exists()


def test_unreadable_files_are_named(tmp_path):
    d = write_npy_layout(tmp_path / "classes", A)
    (d / "2.npy").unlink()
    (d / "2.npy").mkdir()
    with pytest.raises(DatasetReadError, match=r"2\.npy: cannot be read.*IsADirectoryError"):
        load_imagenet32(tmp_path, "npy")
    write_imagenet32(tmp_path / "b", X, Y, num_batches=2, fmt="npz")
    batch = tmp_path / "b" / "train_data_batch_1.npz"
    batch.unlink()
    batch.mkdir()
    with pytest.raises(DatasetReadError, match="train_data_batch_1.npz: cannot be read"):
        read_batch(batch)


def test_missing_batches_and_classes_are_named(tmp_path):
    write_imagenet32(tmp_path / "a", X, Y, num_batches=3)
    (tmp_path / "a" / "train_data_batch_2").unlink()
    with pytest.raises(DatasetNotFoundError, match="missing Imagenet32 batches: train_data_batch_2"):
        load_imagenet32(tmp_path / "a", "imagenet32")
    write_imagenet32(tmp_path / "b", X[Y != 1], Y[Y != 1])
    with pytest.raises(ChecksumError, match=rf"missing classes: no images of class 1 \({WNIDS[1]}, "
                                            rf"Imagenet32 label {clsloc_label(1)}\)"):
        load_imagenet32(tmp_path / "b", "imagenet32")


def test_malformed_hf_copies_are_named(tmp_path):
    import datasets
    from PIL import Image

    def write(name, images, labels, label_feature):
        ds = datasets.Dataset.from_dict(
            {"image": [Image.fromarray(a) for a in images], "label": labels},
            features=datasets.Features({"image": datasets.Image(), "label": label_feature}))
        (tmp_path / name).mkdir()
        ds.to_parquet(str(tmp_path / name / "train-00000-of-00001.parquet"))
        return tmp_path / name

    hwc = X[:6].transpose(0, 2, 3, 1)
    d = write("neg", hwc, [0, 1, 2, -1, 0, 1], datasets.Value("int64"))  # the test split's -1
    with pytest.raises(ChecksumError, match="row 3 has label -1, expected 0..999"):
        load_imagenet32(d, "hf")
    d = write("big", np.zeros((2, 64, 64, 3), np.uint8), [0, 1], datasets.Value("int64"))
    with pytest.raises(ChecksumError, match="image 0 is RGB 64x64, expected RGB 32x32"):
        load_imagenet32(d, "hf")
    d = tmp_path / "cols"
    d.mkdir()
    datasets.Dataset.from_dict({"img": [1], "label": [0]}).to_parquet(str(d / "train.parquet"))
    with pytest.raises(ChecksumError, match="expected 'image' and 'label'"):
        load_imagenet32(d, "hf")


def test_the_hub_id_goes_through_datasets_offline(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="could not load 'nobody/no-such-set'"):
        load_imagenet32(tmp_path, "hf", hf_id="nobody/no-such-set")


# -- command line ------------------------------------------------------------------------
def _cli(argv):
    parser = argparse.ArgumentParser(prog="lop-bench")
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_data_commands(copies, tmp_path, capsys):
    root = str(tmp_path)
    with pytest.raises(DatasetNotFoundError, match=PREPARE):
        _cli(["data", "verify", "imagenet32", "--root", root])
    assert _cli(["data", "prepare", "imagenet32", "--from", str(copies["npz"]), "--root", root,
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "imagenet32" / "classes") in out and FP in out
    assert "smaller than the paper's" in out
    assert _cli(["data", "verify", "imagenet32", "--root", root]) == 0
    assert FP in capsys.readouterr().out
    assert _cli(["data", "verify", "imagenet32", "--source", "hf", "--root", str(copies["saved"])]) == 0
    assert FP in capsys.readouterr().out
    assert _cli(["data", "path", "imagenet32", "--root", root]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "imagenet32" / "classes")
    assert _cli(["data", "path", "--root", root]) == 0
    assert capsys.readouterr().out.strip() == root
    with pytest.raises(InvalidConfigError, match="--source for imagenet32"):
        _cli(["data", "verify", "imagenet32", "--source", "torchvision", "--root", root])


def test_prepare_help_shows_examples(capsys):
    with pytest.raises(SystemExit):
        _cli(["data", "prepare", "--help"])
    out = capsys.readouterr().out
    assert "examples:\n  lop-bench data prepare imagenet32 --from" in out
    with pytest.raises(SystemExit):
        _cli(["data", "prepare", "imagenet32"])  # --from is required


def test_loading_the_layout_imports_no_heavy_module(copies):
    code = (
        "import sys, lop_bench.data;"
        "from lop_bench.envs.continual_imagenet import ContinualImageNetEnv;"
        f"ContinualImageNetEnv('smoke', root={str(copies['npy'])!r}, train_per_class=10);"
        "print([m for m in ('torchvision', 'datasets', 'PIL', 'pyarrow') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
