"""Loading a bundle someone sent: extraction stays inside, pickles and untrusted plugins refused.

The bundles here are hand-made and small: a repro.py that compares inputs.npy (through any plugin
it carries) with expected.npy the way a real one judges, and that leaves a marker file when it
runs, so a refusal can be shown to have run nothing. Pickles are built with a payload that would
create a file when unpickled: that file must never appear.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from fuzzconv.errors import UsageError
from fuzzconv.report.bundle_import import archive_bundle, check_bundle, run_bundle

FID = "F-0000abcd"
MARKER_ENV = "FUZZCONV_TEST_REPRO_MARKER"

REPRO = '''
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np

FINDING = {fid!r}
SYMPTOM = "label_flip"
TIMEOUT_S = 60.0
HERE = Path(__file__).resolve().parent

Path(os.environ["{env}"]).write_text("ran")
x = np.load(HERE / "inputs.npy", allow_pickle=False)
for p in sorted((HERE / "plugin").glob("*.py")):
    spec = importlib.util.spec_from_file_location("bundled_plugin", p)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    x = module.transform(x)
if np.array_equal(x, np.load(HERE / "expected.npy", allow_pickle=False)):
    print("NOT REPRODUCED")
    sys.exit(0)
print("REPRODUCED")
sys.exit(1)
'''

PLUGIN = "def transform(x):\n    return x + 1\n"


class Payload:
    """Unpickling this creates the file at ``path``: evidence that something unpickled."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where repro.py leaves its marker; extraction goes under tmp_path/tmp."""
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    m = tmp_path / "repro-ran"
    monkeypatch.setenv(MARKER_ENV, str(m))
    return m


def make_bundle(root: Path, *, reproduces: bool = False, plugin: bool = False) -> Path:
    """An honest bundle directory (as to its files); with ``plugin``, plugin/shift.py adds 1."""
    (root / "input").mkdir(parents=True)
    (root / "input" / "model.onnx").write_bytes(b"\x08\x07 not really a model")
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(root / "inputs.npy", x, allow_pickle=False)
    np.save(root / "expected.npy", x + (1 if reproduces != plugin else 0), allow_pickle=False)
    (root / "finding.json").write_text(json.dumps({"id": FID, "symptom": "label_flip"}))
    (root / "README.md").write_text("# a finding\n")
    (root / "repro.py").write_text(REPRO.format(fid=FID, env=MARKER_ENV))
    if plugin:
        (root / "plugin").mkdir()
        (root / "plugin" / "shift.py").write_text(PLUGIN)
    return root


def files_under(d: Path) -> set[str]:
    return {p.relative_to(d).as_posix() for p in d.rglob("*")}


# -- honest bundles -------------------------------------------------------------------------------
@pytest.mark.parametrize("reproduces", [True, False])
def test_a_bundle_directory_runs_its_repro(tmp_path: Path, marker: Path, reproduces: bool) -> None:
    b = make_bundle(tmp_path / "b", reproduces=reproduces)
    before = files_under(b)
    r = run_bundle(b)
    assert marker.read_text() == "ran"
    assert (r.reproduced, r.exit_code) == ((True, 1) if reproduces else (False, 0))
    assert r.finding == FID and r.symptom == "label_flip"
    assert r.output.strip().splitlines()[-1] == ("REPRODUCED" if reproduces else "NOT REPRODUCED")
    assert files_under(b) == before


def zip_of(bundle: Path, dst: Path) -> Path:
    """The bundle's files zipped at the archive's top, as someone might zip a folder's contents."""
    with zipfile.ZipFile(dst, "w") as zf:
        for p in sorted(bundle.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(bundle).as_posix())
    return dst


@pytest.mark.parametrize("pack", [lambda b: archive_bundle(b),
                                  lambda b: zip_of(b, b.with_suffix(".zip"))],
                         ids=["tar.gz", "zip"])
def test_archives_round_trip(tmp_path: Path, marker: Path,
                             pack: Callable[[Path], Path]) -> None:
    archive = pack(make_bundle(tmp_path / "b", reproduces=True))
    r = run_bundle(archive)
    assert r.reproduced and r.exit_code == 1 and marker.exists()
    # Extracted into a temporary directory that is gone afterwards.
    assert list((tmp_path / "tmp").iterdir()) == []


def test_archive_bundle_holds_one_folder_of_plain_files(tmp_path: Path) -> None:
    b = make_bundle(tmp_path / "case-1", plugin=True)
    (b / "__pycache__").mkdir()
    (b / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"stale")
    archive = archive_bundle(b)
    assert archive == tmp_path / "case-1.tar.gz"
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    names = {m.name for m in members}
    assert "case-1/repro.py" in names and "case-1/plugin/shift.py" in names
    assert not any("__pycache__" in n for n in names)
    assert all(m.isfile() and m.uname == "" and m.mode == 0o644 for m in members)


def test_a_trusted_plugin_runs_and_leaves_no_bytecode_in_the_bundle(tmp_path: Path,
                                                                     marker: Path) -> None:
    b = make_bundle(tmp_path / "b", plugin=True, reproduces=True)
    r = run_bundle(b, trust_plugin=True)
    # Only the plugin's +1 makes inputs differ from expected: it ran.
    assert r.reproduced and r.plugin_files == ["plugin/shift.py"]
    assert not (b / "plugin" / "__pycache__").exists()


# -- refused: plugin code -------------------------------------------------------------------------
@pytest.mark.parametrize("extra", ["plugin/shift.py", "numpy.py", "onnxruntime/__init__.py",
                                   "lib/fast.cpython-311-x86_64-linux-gnu.so", "helper.pyc"])
def test_code_besides_the_harness_needs_trust(tmp_path: Path, marker: Path, extra: str) -> None:
    b = make_bundle(tmp_path / "b")
    (b / extra).parent.mkdir(parents=True, exist_ok=True)
    (b / extra).write_text(PLUGIN)
    with pytest.raises(UsageError, match="--trust-plugin") as exc:
        run_bundle(b)
    assert extra in str(exc.value)
    assert not marker.exists()


def test_a_compiled_tvm_library_in_input_is_not_plugin_code(tmp_path: Path) -> None:
    b = make_bundle(tmp_path / "b")
    (b / "input" / "lib.so").write_bytes(b"\x7fELF")
    (b / "__pycache__").mkdir()
    (b / "__pycache__" / "fuzzconv_plugins_shim.cpython-311.pyc").write_bytes(b"x")
    assert check_bundle(b).plugin_files == []


# -- refused: leaving the target ------------------------------------------------------------------
def escape_name(target: Path) -> str:
    """A relative member name that lands on ``target`` from any extraction depth up to 40."""
    return "../" * 40 + str(target).lstrip("/")


def tar_with(dst: Path, bundle: Path, add: Callable[[tarfile.TarFile], None]) -> Path:
    with tarfile.open(dst, "w:gz") as tar:
        tar.add(bundle, arcname="b")
        add(tar)
    return dst


def tar_file(name: str, data: bytes = b"escaped") -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return add


def tar_link(name: str, target: str, kind: bytes) -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, target
        tar.addfile(info)
    return add


def zip_with(dst: Path, bundle: Path, name: str, data: bytes = b"escaped",
             symlink: bool = False) -> Path:
    zip_of(bundle, dst)
    with zipfile.ZipFile(dst, "a") as zf:
        info = zipfile.ZipInfo(name)
        if symlink:
            info.external_attr = (0o120777 << 16)
        zf.writestr(info, data)
    return dst


TRAVERSALS: dict[str, Callable[[Path, Path, Path], Path]] = {
    "tar ..": lambda d, b, out: tar_with(d / "a.tar.gz", b, tar_file(escape_name(out))),
    "tar absolute": lambda d, b, out: tar_with(d / "a.tar.gz", b, tar_file(str(out))),
    "tar symlink out": lambda d, b, out: tar_with(
        d / "a.tar.gz", b, tar_link("b/input/link", str(out), tarfile.SYMTYPE)),
    "tar relative symlink out": lambda d, b, out: tar_with(
        d / "a.tar.gz", b, tar_link("b/input/link", escape_name(out), tarfile.SYMTYPE)),
    "tar hardlink out": lambda d, b, out: tar_with(
        d / "a.tar.gz", b, tar_link("b/input/link", str(out), tarfile.LNKTYPE)),
    "zip ..": lambda d, b, out: zip_with(d / "a.zip", b, escape_name(out)),
    "zip absolute": lambda d, b, out: zip_with(d / "a.zip", b, str(out)),
    "zip backslashes": lambda d, b, out: zip_with(d / "a.zip", b,
                                                  escape_name(out).replace("/", "\\")),
    "zip symlink": lambda d, b, out: zip_with(d / "a.zip", b, "input/link",
                                              str(out).encode(), symlink=True),
}


@pytest.mark.parametrize("kind", list(TRAVERSALS))
def test_members_leaving_the_target_are_refused(tmp_path: Path, marker: Path, kind: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_text("mine")
    archive = TRAVERSALS[kind](tmp_path, make_bundle(tmp_path / "b"), victim)
    with pytest.raises(UsageError, match="refusing the bundle") as exc:
        run_bundle(archive)
    assert "\n" not in str(exc.value)
    assert victim.read_text() == "mine" and files_under(outside) == {"victim.txt"}
    assert not marker.exists()
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_directory_bundle_linking_outside_is_refused(tmp_path: Path, marker: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("mine")
    b = make_bundle(tmp_path / "b")
    (b / "input" / "model.onnx").unlink()
    (b / "input" / "model.onnx").symlink_to(secret)
    with pytest.raises(UsageError, match="outside the bundle"):
        run_bundle(b)
    assert not marker.exists()


def test_a_fifo_is_refused_without_being_opened(tmp_path: Path, marker: Path) -> None:
    b = make_bundle(tmp_path / "b")
    os.mkfifo(b / "input" / "pipe")  # opening it for reading would block the check
    with pytest.raises(UsageError, match="not a regular file"):
        run_bundle(b)


# -- refused: pickles -----------------------------------------------------------------------------
def object_npy(payload: Payload) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([payload, 1], dtype=object), allow_pickle=True)
    return buf.getvalue()


def npz_with_object(payload: Payload) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, fine=np.zeros(3, np.float32), bad=np.array([payload], dtype=object))
    return buf.getvalue()


def zip_holding(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("config.json", "{}")
        zf.writestr(name, data)
    return buf.getvalue()


PICKLES: dict[str, tuple[str, Callable[[Payload], bytes]]] = {
    ".pkl": ("input/weights.pkl", pickle.dumps),
    ".pickle": ("input/weights.pickle", pickle.dumps),
    ".pt": ("input/model.pt", pickle.dumps),
    ".pth": ("weights.pth", lambda p: b"anything"),
    "object .npy": ("input/feed.npy", object_npy),
    "object inputs.npy": ("inputs.npy", object_npy),
    "object .npz member": ("input/module.constants.npz", npz_with_object),
    "pickle in a .keras": ("input/model.keras", lambda p: zip_holding("data.pkl",
                                                                       pickle.dumps(p))),
    "renamed torch.save": ("input/model.onnx", lambda p: zip_holding("archive/data.pkl",
                                                                      pickle.dumps(p))),
    "renamed pickle": ("input/model.tflite", lambda p: pickle.dumps(p, protocol=4)),
}


@pytest.mark.parametrize("kind", list(PICKLES))
def test_a_bundle_holding_a_pickle_is_refused_unopened(tmp_path: Path, marker: Path,
                                                       kind: str) -> None:
    unpickled = tmp_path / "unpickled"
    name, make = PICKLES[kind]
    b = make_bundle(tmp_path / "b")
    (b / name).write_bytes(make(Payload(unpickled)))
    for bundle in (b, archive_bundle(b)):
        with pytest.raises(UsageError, match="never unpickles") as exc:
            run_bundle(bundle)
        assert name in str(exc.value)
    assert not unpickled.exists() and not marker.exists()


def test_plain_npz_and_keras_files_pass(tmp_path: Path) -> None:
    b = make_bundle(tmp_path / "b")
    np.savez(b / "input" / "module.constants.npz", w=np.ones((2, 2), np.float32))
    (b / "input" / "model.keras").write_bytes(zip_holding("model.weights.h5", b"\x89HDF"))
    assert check_bundle(b).finding == FID


# -- refused: not a bundle, or no verdict ---------------------------------------------------------
@pytest.mark.parametrize("damage,fragment", [
    (lambda b: (b / "repro.py").unlink(), "has no repro.py"),
    (lambda b: (b / "expected.npy").unlink(), "needs expected.npy"),
    (lambda b: (b / "finding.json").write_text("{"), "not valid JSON"),
    (lambda b: (b / "finding.json").write_text(json.dumps({"id": "F-1", "symptom": "crash"})),
     "is about finding 'F-0000abcd'"),
    (lambda b: (b / "repro.py").write_text("def (:\n"), "not valid Python"),
    (lambda b: (b / "inputs.npy").write_bytes(b"\x93NUMPY garbage"), "not a valid .npy"),
])
def test_an_incomplete_bundle_is_refused(tmp_path: Path, marker: Path,
                                         damage: Callable[[Path], object], fragment: str) -> None:
    b = make_bundle(tmp_path / "b")
    damage(b)
    with pytest.raises(UsageError, match=fragment.replace("(", r"\(")):
        run_bundle(b)
    assert not marker.exists()


def test_an_archive_without_a_bundle_is_refused(tmp_path: Path, marker: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("hello")
    with pytest.raises(UsageError, match="no repro.py at its top"):
        run_bundle(archive_bundle(other))
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not an archive")
    with pytest.raises(UsageError, match="neither a bundle directory nor a bundle archive"):
        run_bundle(junk)


def test_a_missing_package_is_a_usage_error(tmp_path: Path) -> None:
    b = make_bundle(tmp_path / "b")
    (b / "repro.py").write_text(f"import sys\nFINDING = {FID!r}\nTIMEOUT_S = 5.0\n"
                                "print('cannot import tvm (No module named tvm): pip install "
                                "apache-tvm')\nprint('CANNOT RUN')\nsys.exit(2)\n")
    with pytest.raises(UsageError, match="cannot run here: cannot import tvm"):
        run_bundle(b)


def test_a_repro_that_fails_without_a_verdict_is_a_usage_error(tmp_path: Path) -> None:
    b = make_bundle(tmp_path / "b")
    (b / "repro.py").write_text(f"FINDING = {FID!r}\nTIMEOUT_S = 5.0\n"
                                "raise RuntimeError('broken harness')\n")
    with pytest.raises(UsageError, match="no verdict \\(exit 1\\): RuntimeError: broken harness"):
        run_bundle(b)
