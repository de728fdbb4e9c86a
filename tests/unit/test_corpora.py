"""Corpora and preprocessing without any framework: determinism, digests, folder loading, bad input.

The comparison with the frameworks' own preprocessing is in tests/integration/test_preprocessing.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import warnings

import pytest
from PIL import Image

from fuzzconv import corpora
from fuzzconv.corpora import SHIPPED_DIR, Corpus, default_corpus, from_directory
from fuzzconv.preprocessing import center_crop_box, preprocess, preprocess_id
from fuzzconv.synthetic import SYNTHETIC_KINDS, generate_synthetic, synthetic_image
from fuzzconv.errors import UsageError
from fuzzconv.zoo import MODELS

NATURAL = sorted((SHIPPED_DIR / "natural").glob("*.png"))
# The digest of the shipped photographs alone. It changes only when a photograph or the digest's
# definition does, and either must be deliberate: every cached output is keyed on it.
NATURAL_DIGEST = "0fc3cea90fb56ba958f13af11912881de3d9fb406c5b2822807dbc71332bf63c"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("FUZZCONV_CACHE", str(root))
    return root


def _image(path: Path, colour: tuple[int, int, int] = (200, 30, 60), size: tuple[int, int] = (40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


# -- synthetic images -----------------------------------------------------------------------


def test_synthetic_generator_is_bit_identical(tmp_path: Path) -> None:
    first = generate_synthetic(tmp_path / "a", 12)
    second = generate_synthetic(tmp_path / "b", 12)
    assert [p.name for p in first] == [p.name for p in second]
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    for i in range(12):
        assert np.array_equal(synthetic_image(i)[1], synthetic_image(i)[1])


def test_synthetic_image_does_not_depend_on_how_many(tmp_path: Path) -> None:
    few = generate_synthetic(tmp_path / "few", 3)
    many = generate_synthetic(tmp_path / "many", 9)
    assert [p.read_bytes() for p in few] == [p.read_bytes() for p in many[:3]]


def test_synthetic_seed_changes_pixels_and_file_matches_pixels(tmp_path: Path) -> None:
    stem, pixels = synthetic_image(4, seed=0)
    assert not np.array_equal(pixels, synthetic_image(4, seed=1)[1])
    (path,) = generate_synthetic(tmp_path, 5)[4:]
    assert path.stem == stem
    assert np.array_equal(np.asarray(Image.open(path)), pixels)
    assert pixels.shape == (256, 256, 3) and pixels.dtype == np.uint8


def test_synthetic_set_covers_every_kind_and_varies() -> None:
    stems = [synthetic_image(i)[0] for i in range(len(SYNTHETIC_KINDS))]
    assert [s.split("-")[1] for s in stems] == list(SYNTHETIC_KINDS)
    means = {float(synthetic_image(i)[1].mean()) for i in range(30)}
    assert len(means) == 30


def test_generate_synthetic_keeps_existing_files(tmp_path: Path) -> None:
    (path,) = generate_synthetic(tmp_path, 1)
    path.write_bytes(b"kept")
    assert generate_synthetic(tmp_path, 1)[0].read_bytes() == b"kept"
    assert not list(tmp_path.glob(".*.tmp"))


# -- the default corpus and digests ----------------------------------------------------------


def test_default_corpus_is_photos_then_synthetic(cache: Path) -> None:
    corpus = default_corpus()
    assert len(corpus) == 200 and corpus.skipped == 0 and corpus.labels is None
    assert 10 <= len(NATURAL) <= 20
    assert list(corpus.names[: len(NATURAL)]) == [f"corpora/natural/{p.name}" for p in NATURAL]
    assert all(n.startswith("corpora/synthetic-v1/") for n in corpus.names[len(NATURAL):])
    assert all(Path(p).is_file() and Path(p).is_relative_to(cache) for p in corpus.paths[len(NATURAL):])
    again = default_corpus()
    assert again == corpus and again.digest == corpus.digest


def test_default_corpus_prefix_and_small_n(cache: Path) -> None:
    assert default_corpus(30).names == default_corpus(40).names[:30]
    assert default_corpus(3).names == tuple(f"corpora/natural/{p.name}" for p in NATURAL[:3])
    with pytest.raises(UsageError):
        default_corpus(0)


def test_digest_of_shipped_photos_is_pinned(cache: Path) -> None:
    assert default_corpus(len(NATURAL)).digest == NATURAL_DIGEST


def test_digest_definition(tmp_path: Path) -> None:
    a, b = _image(tmp_path / "a.png"), _image(tmp_path / "sub" / "b.png", (1, 2, 3))
    corpus = from_directory(tmp_path)
    h = hashlib.sha256()
    for name, path in (("a.png", a), ("sub/b.png", b)):
        h.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    assert corpus.digest == h.hexdigest()


def test_digest_follows_bytes_and_names_not_labels(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.png", (0, 0, 0))
    before = from_directory(tmp_path)
    assert dataclasses.replace(before, labels=(1, 2)).digest == before.digest
    _image(tmp_path / "b.png", (0, 0, 1))
    assert from_directory(tmp_path).digest != before.digest
    (tmp_path / "b.png").rename(tmp_path / "c.png")
    assert from_directory(tmp_path).digest not in {before.digest}


def test_calibration_corpus_is_disjoint_from_default(cache: Path) -> None:
    calibration = corpora.calibration_corpus(6)
    default = default_corpus(len(NATURAL) + 6)
    assert len(calibration) == 6
    assert not {Path(p).read_bytes() for p in calibration.paths} & {
        Path(p).read_bytes() for p in default.paths
    }


# -- folders ------------------------------------------------------------------------------------


def test_from_directory_synset_layout(tmp_path: Path) -> None:
    _image(tmp_path / "n01443537" / "y.JPEG")
    _image(tmp_path / "n01440764" / "x.JPEG")
    _image(tmp_path / "n02123045" / "cat.png")
    _image(tmp_path / "n99999999" / "unknown.png")
    corpus = from_directory(tmp_path)
    assert corpus.names == (
        "n01440764/x.JPEG", "n01443537/y.JPEG", "n02123045/cat.png", "n99999999/unknown.png",
    )
    assert corpus.labels == (0, 1, 281, None)
    assert corpus.name == tmp_path.name


def test_from_directory_without_synset_list_numbers_folders_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(corpora, "imagenet_synsets", lambda: None)
    _image(tmp_path / "n02123045" / "cat.png")
    _image(tmp_path / "n01443537" / "fish.png")
    with pytest.warns(UserWarning, match="sorted order"):
        assert from_directory(tmp_path).labels == (0, 1)


def test_shipped_synset_list_is_imagenet_1k() -> None:
    synsets = corpora.imagenet_synsets()
    assert synsets is not None and len(synsets) == len(set(synsets)) == 1000
    assert list(synsets) == sorted(synsets)
    assert (synsets[0], synsets[281], synsets[999]) == ("n01440764", "n02123045", "n15075141")


@pytest.mark.parametrize("listing", ["labels.txt", "val.txt", "ground_truth.txt"])
def test_from_directory_labels_file(tmp_path: Path, listing: str) -> None:
    _image(tmp_path / "ILSVRC2012_val_00000001.JPEG")
    _image(tmp_path / "ILSVRC2012_val_00000002.JPEG")
    _image(tmp_path / "nested" / "three.png")
    _image(tmp_path / "unlisted.png")
    (tmp_path / listing).write_text(
        "# ImageNet validation format\n"
        "ILSVRC2012_val_00000001.JPEG 65\n"
        "ILSVRC2012_val_00000002.JPEG n01443537\n"
        "\n"
        "nested/three.png 970\n"
    )
    corpus = from_directory(tmp_path)
    assert corpus.names == (
        "ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG", "nested/three.png",
        "unlisted.png",
    )
    assert corpus.labels == (65, 1, 970, None)


def test_labels_file_wins_over_synset_folders_and_matches_base_names(tmp_path: Path) -> None:
    _image(tmp_path / "n01440764" / "a.png")
    (tmp_path / "labels.txt").write_text("a.png 7\n")
    assert from_directory(tmp_path).labels == (7,)


@pytest.mark.parametrize("line", ["only-a-name", "a.png label", "a.png n00000000"])
def test_bad_labels_file_is_a_usage_error(tmp_path: Path, line: str) -> None:
    _image(tmp_path / "a.png")
    (tmp_path / "labels.txt").write_text(line + "\n")
    with pytest.raises(UsageError, match=r"labels\.txt:1"):
        from_directory(tmp_path)


def test_corrupt_files_are_skipped_and_counted(tmp_path: Path) -> None:
    _image(tmp_path / "good.png")
    (tmp_path / "garbage.jpg").write_bytes(b"not an image at all")
    good_png = _image(tmp_path / "other.png", size=(64, 64)).read_bytes()
    (tmp_path / "truncated.png").write_bytes(good_png[: len(good_png) // 2])
    (tmp_path / "notes.txt").write_text("not an image, not counted")
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        corpus = from_directory(tmp_path)
    assert corpus.names == ("good.png", "other.png")
    assert corpus.skipped == 2


def _one_line_usage_error(path: Path) -> str:
    with pytest.raises(UsageError) as info:
        from_directory(path)
    message = str(info.value)
    assert message and "\n" not in message
    return message


def test_missing_directory(tmp_path: Path) -> None:
    assert "does not exist" in _one_line_usage_error(tmp_path / "nope")
    (tmp_path / "file.png").write_bytes(b"")
    assert "not a directory" in _one_line_usage_error(tmp_path / "file.png")


def test_directory_without_images(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hello")
    assert "no JPEG or PNG images" in _one_line_usage_error(tmp_path)


def test_directory_with_only_corrupt_images(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"junk")
    # nothing usable: the error alone says it, with the count, and no warning precedes it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        message = _one_line_usage_error(tmp_path)
    assert "no readable images" in message and "1 file(s) could not be decoded" in message


# -- subset ---------------------------------------------------------------------------------------


def test_subset(tmp_path: Path) -> None:
    for i in range(5):
        _image(tmp_path / f"n0144076{i}" / f"{i}.png", (i, i, i))
    corpus = from_directory(tmp_path)
    small = corpus.subset([3, 1])
    assert len(small) == 2
    assert small.names == (corpus.names[3], corpus.names[1])
    assert small.paths == (corpus.paths[3], corpus.paths[1])
    assert small.labels == (corpus.labels[3], corpus.labels[1])  # type: ignore[index]
    assert small.digest != corpus.digest
    assert small.subset([1]).names == (corpus.names[1],)
    with pytest.raises(IndexError):
        corpus.subset([5])
    with pytest.raises(IndexError):
        corpus.subset([-1])
    with pytest.raises(ValueError):
        corpus.subset([])


def test_subset_keeps_missing_labels(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.png")
    assert from_directory(tmp_path).subset([1]).labels is None


# -- preprocessing --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_preprocess_shape_and_layout(name: str) -> None:
    spec = MODELS[name]
    batch = preprocess([Image.open(NATURAL[0]), NATURAL[1], str(NATURAL[2])], spec)
    assert batch.dtype == np.float32 and batch.flags.c_contiguous
    assert batch.shape == (3, *spec.input_shape)


def test_preprocess_accepts_images_and_paths_alike() -> None:
    spec = MODELS["torch:mobilenet_v2"]
    assert np.array_equal(preprocess([Image.open(NATURAL[0])], spec), preprocess([NATURAL[0]], spec))


def test_preprocess_converts_grey_and_alpha_images() -> None:
    spec = MODELS["mobilenetv2"]
    grey = preprocess([Image.new("L", (50, 50), 255)], spec)
    rgba = preprocess([Image.new("RGBA", (50, 50), (0, 0, 0, 0))], spec)
    assert grey.shape == rgba.shape == (1, 224, 224, 3)
    assert np.all(grey == 1.0) and np.all(rgba == -1.0)


def test_scaling_modes_on_known_pixels() -> None:
    red = [Image.new("RGB", (8, 8), (255, 0, 0))]
    tf = preprocess(red, MODELS["tiny_keras"])[0, 0, 0]
    assert tf.tolist() == [1.0, -1.0, -1.0]
    torch_like = preprocess(red, MODELS["tiny_torch"])[0, :, 0, 0]
    expected = (np.array([1.0, 0.0, 0.0]) - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(torch_like, expected, rtol=1e-6)
    caffe = dataclasses.replace(MODELS["mobilenetv2"], preprocessing="keras_caffe")
    bgr = preprocess(red, caffe)[0, 0, 0]
    np.testing.assert_allclose(bgr, [-103.939, -116.779, 255 - 123.68], rtol=1e-6)


def test_center_crop_rounds_half_to_even_like_torchvision() -> None:
    assert center_crop_box(257, 256, 224) == (16, 16, 240, 240)  # 16.5 -> 16
    assert center_crop_box(259, 256, 224) == (18, 16, 242, 240)  # 17.5 -> 18
    assert center_crop_box(224, 224, 224) == (0, 0, 224, 224)


def test_preprocess_id() -> None:
    ids = {name: preprocess_id(spec) for name, spec in MODELS.items()}
    assert ids["mobilenetv2"] == "keras_tf:224:NHWC"
    assert ids["inceptionv3"] == "keras_tf:299:NHWC"
    assert ids["torch:inception_v3"] == "torchvision_299:299:NCHW"
    assert ids["mobilenetv2"] == ids["resnet101v2"]
    assert len({ids[n] for n in ("mobilenetv2", "inceptionv3", "densenet121", "tiny_keras")}) == 4


def test_unknown_or_mismatched_preprocessing_is_a_usage_error() -> None:
    unknown = dataclasses.replace(MODELS["mobilenetv2"], preprocessing="nope")
    with pytest.raises(UsageError, match="unknown preprocessing 'nope'"):
        preprocess_id(unknown)
    wrong_size = dataclasses.replace(MODELS["torch:inception_v3"], preprocessing="torchvision_224")
    with pytest.raises(UsageError, match="299px"):
        preprocess([NATURAL[0]], wrong_size)


def test_load_inputs(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.png", (0, 255, 0))
    corpus = from_directory(tmp_path)
    spec = MODELS["tiny_torch"]
    assert np.array_equal(corpus.load_inputs(spec), preprocess(list(corpus.paths), spec))


def test_corpus_checks_its_fields() -> None:
    with pytest.raises(ValueError):
        Corpus("x", ("a",), ())
    with pytest.raises(ValueError):
        Corpus("x", ("a",), ("a",), labels=(1, 2))


def test_importing_corpora_imports_no_framework() -> None:
    code = (
        "import sys, fuzzconv.corpora; "
        "bad = [m for m in ('tensorflow', 'keras', 'torch', 'torchvision') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
