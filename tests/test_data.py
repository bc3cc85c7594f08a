"""The data layer: real-format CIFAR reader, synthetic stand-ins, resumable augmentation, ImageFolder, CLI."""

from __future__ import annotations

import argparse
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from dlarepro import data
from dlarepro.data import synthetic
from dlarepro.data.cli import register

SMALL = {"cifar10": dict(n_train=50, n_test=20), "cifar100": dict(n_train=200, n_test=100)}
CLASSES = {"cifar10": 10, "cifar100": 100}


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    """Both synthetic CIFAR variants under one root (read-only for the tests that use it)."""
    root = tmp_path_factory.mktemp("cifar")
    for dataset, sizes in SMALL.items():
        data.write_synthetic_cifar(root, dataset, seed=0, **sizes)
    return root


def fresh_cifar10(tmp_path: Path) -> Path:
    """A synthetic CIFAR-10 the test may damage; returns its folder."""
    return data.write_synthetic_cifar(tmp_path, "cifar10", n_train=20, n_test=10)


# --------------------------------------------------------------------------------------------
# round trip through the real-format reader


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_synthetic_round_trip(cifar_root, dataset):
    classes = CLASSES[dataset]
    for train, n in ((True, SMALL[dataset]["n_train"]), (False, SMALL[dataset]["n_test"])):
        images, labels = data.load_cifar(cifar_root, dataset, train=train)
        assert images.shape == (n, 32, 32, 3) and images.dtype == np.uint8
        assert labels.shape == (n,) and labels.dtype == np.int64
        assert labels.min() >= 0 and labels.max() < classes
        counts = np.bincount(labels, minlength=classes)
        assert counts.max() - counts.min() <= 1  # balanced: every class present
        assert images.std() > 10  # not a constant image
    assert len(data.cifar_classes(cifar_root, dataset)) == classes
    assert data.is_synthetic(cifar_root, dataset)
    info = data.synthetic_info(cifar_root, dataset)
    assert info["seed"] == "0" and info["dataset"] == dataset and info["n_train"] == str(SMALL[dataset]["n_train"])
    assert not data.official_checksums_match(cifar_root, dataset)


def test_real_layout_and_keys(cifar_root):
    """Same files as torchvision's download; keys decode like the Python 2 originals under both encodings."""
    folder = cifar_root / "cifar-10-batches-py"
    names = {p.name for p in folder.iterdir()}
    assert names == {"data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                     "test_batch", "batches.meta", "SYNTHETIC"}
    assert {p.name for p in (cifar_root / "cifar-100-python").iterdir()} == {"train", "test", "meta", "SYNTHETIC"}
    with open(folder / "data_batch_1", "rb") as fh:
        as_latin1 = pickle.load(fh, encoding="latin1")  # torchvision's way
    with open(folder / "data_batch_1", "rb") as fh:
        as_bytes = pickle.load(fh, encoding="bytes")  # the CIFAR website's way
    assert set(as_latin1) == {"batch_label", "labels", "data", "filenames"}
    assert set(as_bytes) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert as_bytes[b"data"].shape == (10, 3072) and as_bytes[b"data"].dtype == np.uint8
    with open(cifar_root / "cifar-100-python" / "train", "rb") as fh:
        train100 = pickle.load(fh, encoding="bytes")
    assert set(train100) == {b"filenames", b"batch_label", b"fine_labels", b"coarse_labels", b"data"}
    with open(cifar_root / "cifar-100-python" / "meta", "rb") as fh:
        meta100 = pickle.load(fh, encoding="latin1")
    assert len(meta100["fine_label_names"]) == 100 and len(meta100["coarse_label_names"]) == 20


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_torchvision_reads_the_stand_in(cifar_root, dataset, monkeypatch):
    """With only its md5 check switched off, torchvision's own loader gets the same arrays."""
    import torchvision.datasets.cifar as tv

    monkeypatch.setattr(tv, "check_integrity", lambda *args, **kwargs: True)
    source = tv.CIFAR10 if dataset == "cifar10" else tv.CIFAR100
    for train in (True, False):
        theirs = source(str(cifar_root), train=train, download=False)
        images, labels = data.load_cifar(cifar_root, dataset, train)
        assert np.array_equal(theirs.data, images) and theirs.targets == labels.tolist()
        assert theirs.classes == data.cifar_classes(cifar_root, dataset)


def test_deterministic_bytes(tmp_path):
    first = data.write_synthetic_cifar(tmp_path / "a", "cifar10", n_train=30, n_test=10, seed=3)
    again = data.write_synthetic_cifar(tmp_path / "b", "cifar10", n_train=30, n_test=10, seed=3)
    other = data.write_synthetic_cifar(tmp_path / "c", "cifar10", n_train=30, n_test=10, seed=4)
    for path in sorted(first.iterdir()):
        assert path.read_bytes() == (again / path.name).read_bytes(), path.name
    assert (first / "data_batch_1").read_bytes() != (other / "data_batch_1").read_bytes()
    assert (first / "test_batch").read_bytes() != (other / "test_batch").read_bytes()


def test_synthetic_is_learnable(cifar_root):
    """Class structure a CNN can pick up: even nearest class mean beats chance by far."""
    x_train, y_train = data.load_cifar(cifar_root, "cifar10", True)
    x_test, y_test = data.load_cifar(cifar_root, "cifar10", False)
    flat = lambda x: x.reshape(len(x), -1).astype(np.float64)  # noqa: E731
    means = np.stack([flat(x_train)[y_train == c].mean(0) for c in range(10)])
    predicted = ((flat(x_test)[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    assert (predicted == y_test).mean() > 0.5


# --------------------------------------------------------------------------------------------
# the reader on hand-made files (not just mirroring the generator)


def write_handmade_cifar10(root: Path, protocol: int, str_keys: bool) -> Path:
    """A minimal CIFAR-10 written with the standard pickler, as a third party would."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    key = (lambda k: k) if str_keys else (lambda k: k.encode())
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        rows = np.zeros((2, 3072), dtype=np.uint8)
        rows[0, :1024] = np.arange(1024) % 251  # red plane of image 0, row-major
        rows[0, 1024:2048] = 7                  # green
        rows[0, 2048:] = 200                    # blue
        rows[1] = i
        batch = {key("data"): rows, key("labels"): [i % 10, 9]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    meta = {key("label_names"): [f"c{k}" for k in range(10)], key("num_cases_per_batch"): 2}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return folder


@pytest.mark.parametrize("protocol,str_keys", [(2, False), (4, True), (pickle.HIGHEST_PROTOCOL, False)])
def test_reads_handmade_pickles(tmp_path, protocol, str_keys):
    write_handmade_cifar10(tmp_path, protocol, str_keys)
    images, labels = data.load_cifar(tmp_path, "cifar10", train=True)
    assert images.shape == (10, 32, 32, 3) and labels.tolist() == [0, 9, 1, 9, 2, 9, 3, 9, 4, 9]
    assert np.array_equal(images[0, :, :, 0], (np.arange(1024) % 251).reshape(32, 32))  # planar -> HWC
    assert (images[0, :, :, 1] == 7).all() and (images[0, :, :, 2] == 200).all()
    assert (images[3] == 1).all()  # second image of data_batch_2
    test_images, test_labels = data.load_cifar(tmp_path, "cifar10", train=False)
    assert test_images.shape == (2, 32, 32, 3) and test_labels.tolist() == [5, 9]
    assert data.cifar_classes(tmp_path, "cifar10") == [f"c{k}" for k in range(10)]
    assert not data.is_synthetic(tmp_path, "cifar10")


# --------------------------------------------------------------------------------------------
# errors


def test_missing_folder_names_path_and_remedies(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.load_cifar(tmp_path, "cifar100", train=True)
    message = str(err.value)
    assert str(tmp_path / "cifar-100-python") in message
    assert "dla-repro data download --dataset cifar100" in message and "dla-repro data synthetic" in message
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, data.DatasetError)


def test_missing_file_names_path(tmp_path):
    folder = fresh_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    for train in (True, False):  # an incomplete copy fails for either split
        with pytest.raises(data.DatasetNotFoundError, match="data_batch_3") as err:
            data.load_cifar(tmp_path, "cifar10", train=train)
        assert str(folder / "data_batch_3") in str(err.value)


def test_truncated_pickle(tmp_path):
    folder = fresh_cifar10(tmp_path)
    path = folder / "data_batch_2"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(data.CorruptDatasetError) as err:
        data.load_cifar(tmp_path, "cifar10", train=True)
    assert str(path) in str(err.value) and isinstance(err.value, ValueError)


def rewrite_batch(path: Path, **changes) -> None:
    with open(path, "rb") as fh:
        batch = pickle.load(fh, encoding="bytes")
    batch.update({k.encode(): v for k, v in changes.items()})
    path.write_bytes(pickle.dumps(batch, protocol=2))


@pytest.mark.parametrize("change,expected", [
    (dict(data=np.zeros((4, 3071), dtype=np.uint8)), r"shape \(4, 3071\)"),
    (dict(data=np.zeros((4, 3072), dtype=np.float32)), "dtype float32"),
    (dict(data=[[0] * 3072] * 4), "numpy array"),
    (dict(labels=[0, 1, 10, 2]), "label 10 at position 2 is out of range 0..9"),
    (dict(labels=[0, 1, -1, 2]), "label -1"),
    (dict(labels=[0, 1, 2]), "4 images but 3"),
    (dict(labels=[0.0, 1.0, 2.0, 3.0]), "integers"),
])
def test_corrupt_contents_name_file_and_problem(tmp_path, change, expected):
    folder = fresh_cifar10(tmp_path)
    path = folder / "data_batch_4"
    changes = dict(data=np.zeros((4, 3072), dtype=np.uint8), labels=[0, 1, 2, 3])
    changes.update(change)
    rewrite_batch(path, **changes)
    with pytest.raises(data.CorruptDatasetError, match=expected) as err:
        data.load_cifar(tmp_path, "cifar10", train=True)
    assert str(path) in str(err.value)


def test_wrong_number_of_classes(tmp_path):
    folder = fresh_cifar10(tmp_path)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"x"] * 100}, protocol=2))
    with pytest.raises(data.CorruptDatasetError, match="100 class names, but CIFAR-10 has 10"):
        data.load_cifar(tmp_path, "cifar10", train=False)


def test_foreign_objects_are_refused(tmp_path):
    """A pickle naming anything but numpy's array machinery is reported, not executed."""
    folder = fresh_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("side effect",))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(data.CorruptDatasetError, match="unexpected object builtins.print"):
        data.load_cifar(tmp_path, "cifar10", train=False)


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="'cifar1000'"):
        data.load_cifar("/nowhere", "cifar1000", train=True)


def test_download_failure_is_explained(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    with pytest.raises(data.DatasetDownloadError, match="no internet") as err:
        data.download_cifar(tmp_path, "cifar100")
    assert "Name or service not known" in str(err.value) and "dla-repro data synthetic" in str(err.value)


def test_download_refuses_the_synthetic_folder(tmp_path):
    fresh_cifar10(tmp_path)
    with pytest.raises(data.DatasetDownloadError, match="synthetic stand-in"):
        data.download_cifar(tmp_path, "cifar10")


# --------------------------------------------------------------------------------------------
# augmentation


def test_augmentation_is_a_function_of_seed_epoch_index(cifar_root):
    images, labels = data.load_cifar(cifar_root, "cifar10", train=True)
    one = data.CifarDataset(images, labels, train=True, seed=5)
    two = data.CifarDataset(images, labels, train=True, seed=5)
    order = list(range(len(one)))
    first = {i: one[i][0] for i in order}
    second = {i: two[i][0] for i in reversed(order)}  # access order must not matter
    assert all(torch.equal(first[i], second[i]) for i in order)
    x, y = one[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == labels[0]

    one.set_epoch(1)
    assert sum(not torch.equal(first[i], one[i][0]) for i in order) > len(order) // 2
    one.set_epoch(0)
    assert torch.equal(first[7], one[7][0])
    other_seed = data.CifarDataset(images, labels, train=True, seed=6)
    assert any(not torch.equal(first[i], other_seed[i][0]) for i in order)


def test_augmentation_matches_the_official_recipe_bit_for_bit(cifar_root):
    from PIL import Image

    images, labels = data.load_cifar(cifar_root, "cifar10", train=True)
    dataset = data.CifarDataset(images, labels, train=True, seed=1)
    dataset.set_epoch(3)
    reference = data.cifar_transforms(train=True)
    for index in range(20):
        torch.manual_seed(data.sample_seed(1, 3, index))  # the global RNG torchvision draws from
        assert torch.equal(dataset[index][0], reference(Image.fromarray(images[index])))
    test_set = data.CifarDataset(images, labels, train=False)
    plain = data.cifar_transforms(train=False)
    assert all(torch.equal(test_set[i][0], plain(Image.fromarray(images[i]))) for i in range(5))


def test_augmentation_independent_of_worker_count(cifar_root):
    images, labels = data.load_cifar(cifar_root, "cifar10", train=True)
    dataset = data.CifarDataset(images, labels, train=True, seed=2)
    dataset.set_epoch(4)
    batches = [[3, 1, 4], [15, 9, 2], [6, 5, 35]]
    outputs = []
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=workers)
        outputs.append(torch.cat([x for x, _ in loader]))
    assert torch.equal(outputs[0], outputs[1])


def test_sample_seed_spreads():
    seeds = {data.sample_seed(0, e, i) for e in range(3) for i in range(1000)}
    assert len(seeds) == 3000 and all(0 <= s < 2 ** 63 for s in seeds)


# --------------------------------------------------------------------------------------------
# ImageFolder


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imagenet") / "ilsvrc"
    data.write_synthetic_imagefolder(root, n_classes=3, n_train_per_class=4, n_val_per_class=2, size=40)
    return root


def test_imagefolder_stand_in_loads(imagenet_root):
    assert (imagenet_root / "SYNTHETIC").is_file() and data.imagenet_is_synthetic(imagenet_root)
    assert sorted(p.name for p in (imagenet_root / "val" / "n00000002").iterdir())[0].endswith(".JPEG")
    train, val = data.imagenet_datasets(imagenet_root)
    assert train.classes == val.classes == ["n00000001", "n00000002", "n00000003"]
    assert len(train) == 12 and len(val) == 6
    x, y = val[5]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and y == 2
    assert train[0][0].shape == (3, 224, 224)


def test_imagefolder_augmentation_is_seeded(imagenet_root):
    train, _ = data.imagenet_datasets(imagenet_root, seed=3)
    again, _ = data.imagenet_datasets(imagenet_root, seed=3)
    state = torch.get_rng_state()
    assert torch.equal(train[1][0], again[1][0])
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    train.set_epoch(1)
    assert not torch.equal(train[1][0], again[1][0])


def test_imagefolder_missing_or_empty_split(tmp_path):
    root = tmp_path / "inet"
    data.write_synthetic_imagefolder(root, n_classes=2, n_train_per_class=1, n_val_per_class=1, size=16)
    for child in (root / "val").iterdir():
        for f in child.iterdir():
            f.unlink()
        child.rmdir()
    with pytest.raises(data.DatasetNotFoundError, match="empty") as err:
        data.imagenet_datasets(root)
    assert str(root / "val") in str(err.value)
    (root / "val").rmdir()
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.imagenet_datasets(root)
    assert str(root / "val") in str(err.value)
    with pytest.raises(data.DatasetNotFoundError, match="missing folder"):
        data.imagenet_datasets(tmp_path / "absent")


# --------------------------------------------------------------------------------------------
# atomic writes


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


def test_failure_mid_write_leaves_no_dataset(tmp_path, monkeypatch):
    real_write = synthetic._write_pickle
    calls = []

    def failing_write(path, obj):
        calls.append(path.name)
        if len(calls) == 3:
            raise OSError("disk full (simulated)")
        real_write(path, obj)

    monkeypatch.setattr(synthetic, "_write_pickle", failing_write)
    with pytest.raises(OSError, match="simulated"):
        data.write_synthetic_cifar(tmp_path, "cifar10", n_train=20, n_test=10)
    assert not (tmp_path / "cifar-10-batches-py").exists() and leftovers(tmp_path) == []


def test_failed_regeneration_keeps_the_old_stand_in(tmp_path, monkeypatch):
    folder = fresh_cifar10(tmp_path)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    monkeypatch.setattr(synthetic, "_write_pickle", lambda path, obj: (_ for _ in ()).throw(OSError("boom")))
    with pytest.raises(OSError, match="boom"):
        data.write_synthetic_cifar(tmp_path, "cifar10", n_train=30, n_test=10, seed=9)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before and leftovers(tmp_path) == []


def test_regeneration_replaces_stand_in_but_never_real_data(tmp_path):
    fresh_cifar10(tmp_path)
    data.write_synthetic_cifar(tmp_path, "cifar10", n_train=40, n_test=10, seed=1)
    assert len(data.load_cifar(tmp_path, "cifar10", True)[1]) == 40 and leftovers(tmp_path) == []
    write_handmade_cifar10(tmp_path / "real", protocol=2, str_keys=False)
    with pytest.raises(FileExistsError, match="no SYNTHETIC marker"):
        data.write_synthetic_cifar(tmp_path / "real", "cifar10", n_train=20, n_test=10)
    assert not data.is_synthetic(tmp_path / "real", "cifar10")


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="n_train must be an integer >= 100.*got 50"):
        data.write_synthetic_cifar("/nowhere", "cifar100", n_train=50)


# --------------------------------------------------------------------------------------------
# CLI


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="dla-repro")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_cli_synthetic_then_check(tmp_path, capsys):
    assert run_cli("data", "synthetic", "--dataset", "cifar100", "--root", str(tmp_path), "--n-train", "100",
                   "--n-test", "100", "--seed", "2") == 0
    assert run_cli("data", "check", "--dataset", "cifar100", "--root", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "seed 2" in out and "classes: 100" in out and "train: 100 images" in out
    assert run_cli("data", "synthetic", "--dataset", "imagenet", "--root", str(tmp_path / "inet"),
                   "--n-classes", "2", "--n-train", "1", "--n-test", "1", "--size", "16") == 0
    assert run_cli("data", "check", "--dataset", "imagenet", "--root", str(tmp_path / "inet"), "--json") == 0
    summary = __import__("json").loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["synthetic"] and summary["classes"] == 2 and summary["splits"]["val"]["images"] == 2


def test_cli_check_failures_exit_1_without_traceback(tmp_path, capsys):
    assert run_cli("data", "check", "--dataset", "cifar10", "--root", str(tmp_path)) == 1
    err = capsys.readouterr().err
    assert err.startswith("dla-repro data check: error:") and str(tmp_path / "cifar-10-batches-py") in err
    assert "Traceback" not in err and err.count("\n") == 1
    folder = fresh_cifar10(tmp_path)
    (folder / "test_batch").write_bytes(b"\x80\x02}q\x00")
    assert run_cli("data", "check", "--dataset", "cifar10", "--root", str(tmp_path)) == 1
    assert str(folder / "test_batch") in capsys.readouterr().err


def test_cli_help_and_choices(capsys):
    with pytest.raises(SystemExit) as exit_:
        run_cli("data", "synthetic", "--help")
    assert exit_.value.code == 0 and "--n-train" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        run_cli("data", "download", "--dataset", "imagenet", "--root", "x")  # ImageNet cannot be downloaded
