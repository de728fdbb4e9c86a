"""Bundles that travel: ``fuzzconv bundle --archive`` and ``fuzzconv repro BUNDLE``.

A bundle (:mod:`.bundle`) is meant to be sent to someone, so the one fuzzconv loads may come from a
stranger. :func:`run_bundle` takes a bundle directory or an archive of one (``.tar.gz``, ``.tgz``,
``.tar``, ``.zip``), checks it, and runs its ``repro.py`` in a subprocess with this interpreter:
exit 1 means REPRODUCED, 0 NOT REPRODUCED, as for ``fuzzconv repro ID``.

What is refused, each as a :class:`~fuzzconv.errors.UsageError` (one line, exit 2), before
anything of the bundle runs:

- **Leaving the target.** An archive is extracted into a fresh temporary directory, removed
  afterwards. Every member is checked first, nothing is written until all pass: no absolute
  paths, no ``..``, no links pointing outside, no devices or FIFOs. Tar archives are then
  extracted with the standard library's ``filter="data"``, which checks the same again while
  writing; zip members are written one by one to the checked path (``zipfile`` itself would
  silently rename a bad member instead of refusing it), and zip symlinks are refused. A bundle
  directory may not hold links that resolve outside it, nor anything but files and directories.
- **Pickles.** fuzzconv never unpickles, and a bundle that holds a pickle is refused rather than
  half-trusted: ``.pkl``/``.pickle``/``.pt``/``.pth`` files; ``.npy`` files and ``.npz`` members
  whose header declares an object dtype (what needs ``allow_pickle``: the header is read, never
  the data); zip-format files (``.npz``, ``.keras``, a renamed ``torch.save`` file) with members
  named like pickles; and any file that starts and ends like a pickle stream.
- **Plugin code.** A bundle of a plugin step carries the plugin file, and ``repro.py`` imports and
  runs it. Any Python code besides ``repro.py`` and ``fuzzconv_plugins_shim.py`` (``plugin/*.py``,
  other ``.py``/``.pyc`` files, extension modules outside ``input/``: ``repro.py`` puts the bundle
  first on ``sys.path``, so these could stand in for a library) runs only with
  ``trust_plugin=True``; without it the refusal names the file.
- **Not a bundle.** ``repro.py`` must parse and name the finding that ``finding.json`` holds;
  ``inputs.npy`` and ``input/`` must exist, and ``expected.npy`` unless the finding is a crash or a
  hang.

``repro.py`` is run with ``PYTHONPATH`` and ``PYTHONHOME`` removed and ``PYTHONPYCACHEPREFIX`` set
to a fresh directory: bytecode shipped in the bundle's ``__pycache__`` is never used in place of
the source next to it, and nothing is written there. The checks cannot make ``repro.py`` itself
harmless: it is Python from whoever made the bundle, to be read before it is run.
"""

from __future__ import annotations

import ast
import json
import os
import posixpath
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

import numpy as np

from ..errors import UsageError

#: Files a bundle always has.
REQUIRED = ("repro.py", "finding.json", "inputs.npy")
#: The Python files of a bundle that are not plugin code.
HARNESS = ("repro.py", "fuzzconv_plugins_shim.py")
#: A generated model's source script: shipped to be read and run by hand, never run by
#: ``repro.py`` (which imports nothing from ``model/``), so it is not plugin code.
MODEL_SCRIPT = "model/model.py"
#: File names that are pickles whatever they hold.
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth")
#: Files Python imports as code.
CODE_SUFFIXES = (".py", ".pyw", ".pyc", ".pyo", ".pyd", ".so")
#: Archive suffixes :func:`run_bundle` reads (by content, the suffix only names them).
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
#: Most members and bytes an archive may unpack to.
MAX_MEMBERS = 10_000
MAX_BYTES = 4 << 30
#: What a finding symptom needs besides :data:`REQUIRED` (a bundle is never about a slowdown).
SYMPTOMS_WITHOUT_EXPECTED = ("crash", "timeout")
SYMPTOMS = ("label_flip", "numeric", "nan", *SYMPTOMS_WITHOUT_EXPECTED)
#: Verdict lines of ``repro.py`` and the exit codes that go with them.
VERDICTS = {"REPRODUCED": 1, "NOT REPRODUCED": 0, "CANNOT RUN": 2}
#: Extra seconds past repro.py's own step timeout before the whole run is given up.
GRACE_S = 600.0


@dataclass
class BundleRun:
    """What running a bundle gave.

    Args:
        source: the directory or archive given.
        finding: the finding ID from ``finding.json``.
        symptom: its symptom.
        reproduced: whether ``repro.py`` printed REPRODUCED (exit 1).
        exit_code: ``repro.py``'s exit code.
        output: what ``repro.py`` printed on stdout.
        plugin_files: plugin code that ran because it was trusted (bundle-relative paths).
    """

    source: Path
    finding: str
    symptom: str
    reproduced: bool
    exit_code: int
    output: str
    plugin_files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": str(self.source), "id": self.finding, "symptom": self.symptom,
                "reproduced": self.reproduced, "exit_code": self.exit_code,
                "plugin_files": self.plugin_files, "output": self.output}


def looks_like_bundle_path(text: str) -> bool:
    """Whether a ``repro`` argument that names nothing on disk was meant as a path, not an ID."""
    return "/" in text or os.sep in text or text.lower().endswith(ARCHIVE_SUFFIXES)


def run_bundle(path: Path, *, trust_plugin: bool = False,
               say: Callable[[str], None] = lambda s: None) -> BundleRun:
    """Check a bundle directory or archive, then run its ``repro.py`` with this interpreter.

    Args:
        path: a bundle directory, or a ``.tar.gz``/``.tgz``/``.tar``/``.zip`` archive holding one
            (at its top or in its single top-level folder).
        trust_plugin: run a bundle that carries plugin code. Defaults to False.
        say: progress messages.

    Returns:
        The verdict and what ``repro.py`` printed.

    Raises:
        UsageError: the bundle is refused (see the module docstring), ``repro.py`` cannot run (a
            package is missing) or fails without a verdict.
    """
    src = Path(path).expanduser()
    if src.is_dir():
        return _run(src, src.resolve(), trust_plugin, say)
    if not src.is_file():
        raise UsageError(f"no bundle at {src}")
    with tempfile.TemporaryDirectory(prefix="fuzzconv-bundle-") as tmp:
        root = extract_bundle(src, Path(tmp) / "bundle", say)
        return _run(src, root, trust_plugin, say)


def archive_bundle(root: Path) -> Path:
    """Write ``<root>.tar.gz`` beside a bundle directory: its files under one top-level folder.

    Only regular files go in (``__pycache__`` is left out), with no owner names and mode 0644.
    Returns the archive's path.
    """
    root = Path(root).resolve()
    dst = root.with_name(root.name + ".tar.gz")
    if dst.exists() and not dst.is_file():
        raise UsageError(f"cannot write the archive {dst}: it exists and is not a file")
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and not p.is_symlink() and "__pycache__" not in p.parts)
    tmp = dst.with_name(f".{dst.name}.tmp")
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for p in files:
                arcname = f"{root.name}/{p.relative_to(root).as_posix()}"
                info = tar.gettarinfo(str(p), arcname=arcname)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o644
                with p.open("rb") as fh:
                    tar.addfile(info, fh)
        os.replace(tmp, dst)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write the archive {dst}: {exc.strerror or exc}") from None
    return dst


# -- extraction -----------------------------------------------------------------------------------
def extract_bundle(archive: Path, dest: Path, say: Callable[[str], None] = lambda s: None) -> Path:
    """Extract a bundle archive into ``dest`` (created, must not exist); return the bundle root.

    Every member is checked before anything is written; nothing is written outside ``dest``.
    """
    dest.mkdir(parents=True)
    dest = dest.resolve()
    say(f"checking the archive {archive.name}")
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, dest)
        elif tarfile.is_tarfile(str(archive)):
            _extract_tar(archive, dest)
        else:
            raise UsageError(f"{archive} is neither a bundle directory nor a bundle archive "
                             f"({', '.join(ARCHIVE_SUFFIXES)})")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as exc:
        raise UsageError(f"cannot read the bundle archive {archive}: {exc}") from None
    if (dest / "repro.py").is_file():
        return dest
    top = list(dest.iterdir())
    if len(top) == 1 and top[0].is_dir() and not top[0].is_symlink() \
            and (top[0] / "repro.py").is_file():
        return top[0]
    raise UsageError(f"{archive} is not a bundle: no repro.py at its top or in its single "
                     "top-level folder")


def _outside(name: str) -> bool:
    """Whether an archive member name, relative to the target, leaves it."""
    p = name.replace("\\", "/")
    if p.startswith("/") or re.match(r"^[A-Za-z]:", p):
        return True
    norm = posixpath.normpath(p)
    return norm == ".." or norm.startswith("../")


def _refuse_member(archive: Path, name: str, why: str) -> UsageError:
    return UsageError(f"refusing the bundle {archive}: member {name!r} {why}")


def _check_count(archive: Path, count: int, size: int) -> None:
    if count > MAX_MEMBERS:
        raise UsageError(f"refusing the bundle {archive}: {count} members (at most "
                         f"{MAX_MEMBERS})")
    if size > MAX_BYTES:
        raise UsageError(f"refusing the bundle {archive}: it unpacks to {size / 2**30:.1f} GiB "
                         f"(at most {MAX_BYTES / 2**30:.0f} GiB)")


def _extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        _check_count(archive, len(members), sum(m.size for m in members if m.isfile()))
        for m in members:
            if _outside(m.name):
                raise _refuse_member(archive, m.name, "leaves the extraction directory")
            if m.issym():
                target = posixpath.join(posixpath.dirname(m.name), m.linkname)
                if m.linkname.startswith("/") or _outside(target):
                    raise _refuse_member(archive, m.name, f"is a link to {m.linkname}, outside "
                                                          "the extraction directory")
            elif m.islnk():
                if _outside(m.linkname):
                    raise _refuse_member(archive, m.name, f"is a hard link to {m.linkname}, "
                                                          "outside the extraction directory")
            elif not (m.isfile() or m.isdir()):
                raise _refuse_member(archive, m.name, "is a device or FIFO, not a file")
        try:
            tar.extractall(dest, filter="data")
        except tarfile.FilterError as exc:
            raise _refuse_member(archive, exc.tarinfo.name,
                                 f"is refused by tarfile's data filter ({exc})") from None


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        _check_count(archive, len(infos), sum(i.file_size for i in infos))
        for info in infos:
            if _outside(info.filename):
                raise _refuse_member(archive, info.filename, "leaves the extraction directory")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise _refuse_member(archive, info.filename, "is a symbolic link (a bundle holds "
                                                             "files only)")
        for info in infos:
            target = dest.joinpath(*[p for p in info.filename.replace("\\", "/").split("/")
                                     if p not in ("", ".")])
            if not target.resolve().is_relative_to(dest):  # cannot happen after the checks above
                raise _refuse_member(archive, info.filename, "leaves the extraction directory")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out)


# -- checking -------------------------------------------------------------------------------------
@dataclass
class _Checked:
    finding: str
    symptom: str
    timeout_s: float
    plugin_files: list[str]


def check_bundle(root: Path) -> _Checked:
    """Check a bundle directory (links, pickles, required files); find its plugin code.

    Refusals are :class:`UsageError`; the plugin files are returned, not refused, so the caller
    decides whether they are trusted.
    """
    root = Path(root).resolve()
    files: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in sorted(dirnames + filenames):
            p = here / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                real = p.resolve()
                if not real.is_relative_to(root):
                    raise UsageError(f"refusing the bundle {root}: {rel} is a link to {real}, "
                                     "outside the bundle")
            mode = p.stat().st_mode if p.exists() else 0
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise UsageError(f"refusing the bundle {root}: {rel} is not a regular file")
            if stat.S_ISREG(mode):
                files.append((rel, p))
    for rel, p in files:
        why = _pickle_in(p)
        if why:
            raise UsageError(f"refusing the bundle {root}: {rel} {why}"
                             + ("; fuzzconv never unpickles (arrays go in .npy/.npz without "
                                "objects)" if _PICKLE_WORDS.search(why) else ""))
    names = {rel for rel, _ in files}
    for need in REQUIRED:
        if need not in names:
            raise UsageError(f"{root} is not a fuzzconv bundle: it has no {need}")
    finding = _finding(root)
    if finding["symptom"] not in SYMPTOMS_WITHOUT_EXPECTED and "expected.npy" not in names:
        raise UsageError(f"{root} is not a complete bundle: a {finding['symptom']} finding needs "
                         "expected.npy")
    if not any(rel.startswith("input/") for rel in names):
        raise UsageError(f"{root} is not a complete bundle: input/ holds no artifact")
    timeout = _check_repro(root, finding["id"])
    plugin = sorted((rel for rel in names if _is_code(rel)),
                    key=lambda rel: (not rel.startswith("plugin/"), rel))
    return _Checked(finding["id"], finding["symptom"], timeout, plugin)


def _is_code(rel: str) -> bool:
    """Whether a bundle file is Python code that is not the bundle's own harness."""
    parts = rel.split("/")
    if rel in HARNESS or rel == MODEL_SCRIPT or "__pycache__" in parts[:-1]:
        return False
    if rel.endswith(".so") and parts[0] == "input":
        return False  # a compiled TVM library: the culprit's input artifact
    return rel.endswith(CODE_SUFFIXES) or ".so." in parts[-1]


def _finding(root: Path) -> dict[str, Any]:
    try:
        f = json.loads((root / "finding.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{root}/finding.json is not valid JSON: {exc}") from None
    if not isinstance(f, dict) or not isinstance(f.get("id"), str) \
            or not isinstance(f.get("symptom"), str):
        raise UsageError(f"{root}/finding.json is not a finding (needs a string id and symptom)")
    if f["symptom"] not in SYMPTOMS:
        raise UsageError(f"{root}/finding.json: a bundle reproduces {', '.join(SYMPTOMS)}, not "
                         f"{f['symptom']!r}")
    return f


def _check_repro(root: Path, fid: str) -> float:
    """Parse repro.py (never import it): it must be about ``fid``; returns its TIMEOUT_S."""
    try:
        tree = ast.parse((root / "repro.py").read_bytes(), "repro.py")
    except (SyntaxError, ValueError) as exc:
        raise UsageError(f"{root}/repro.py is not valid Python: {exc}") from None
    consts: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name) and isinstance(node.value, ast.Constant):
            consts[node.targets[0].id] = node.value.value
    if consts.get("FINDING") != fid:
        raise UsageError(f"{root}: repro.py is about finding {consts.get('FINDING')!r}, "
                         f"finding.json about {fid!r}")
    timeout = consts.get("TIMEOUT_S")
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise UsageError(f"{root}: repro.py sets no positive TIMEOUT_S")
    return float(timeout)


#: What a refusal from :func:`_pickle_in` says when the file is or needs a pickle.
_PICKLE_WORDS = re.compile(r"pickle|Python objects")


def _pickle_in(path: Path) -> str | None:
    """Why the file is or holds a pickle, or cannot be read as its kind; None when it is fine.

    Reads headers only; never unpickles.
    """
    name = path.name.lower()
    if name.endswith(PICKLE_SUFFIXES):
        return "is a pickle file"
    try:
        with path.open("rb") as fh:
            head = fh.read(6)
            if _pickle_stream(head, fh):
                return "is a pickle stream"
            if head == b"\x93NUMPY":
                fh.seek(0)
                return _npy_refusal(fh)
        if zipfile.is_zipfile(path):
            return _zip_refusal(path)
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
        return f"cannot be read ({exc})"
    if name.endswith(".npy"):
        return "is not a .npy file"
    return None


def _pickle_stream(head: bytes, fh: IO[bytes]) -> bool:
    """Protocol 2+ pickles start with PROTO (0x80, version 2-5) and end with STOP ('.')."""
    if len(head) < 2 or head[0] != 0x80 or head[1] not in (2, 3, 4, 5):
        return False
    fh.seek(-1, os.SEEK_END)
    return fh.read(1) == b"."


def _npy_refusal(fh: IO[bytes]) -> str | None:
    """Why a .npy stream cannot load with ``allow_pickle=False``, from its header alone."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            _shape, _order, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            _shape, _order, dtype = np.lib.format.read_array_header_2_0(fh)
        elif version == (3, 0):
            return "is a .npy of format 3.0, which bundles never use"
        else:
            return f"is not a valid .npy (format version {version[0]}.{version[1]})"
    except ValueError as exc:
        return f"is not a valid .npy ({' '.join(str(exc).split())[:120]})"
    if dtype.hasobject:
        return f"holds Python objects (dtype {dtype}), which only load with allow_pickle"
    return None


def _zip_refusal(path: Path) -> str | None:
    """Why a zip-format file (.npz, .keras, a renamed torch.save file) holds a pickle."""
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            member = info.filename.lower()
            if member.endswith(PICKLE_SUFFIXES):
                return f"holds the pickle {info.filename}"
            if member.endswith(".npy") or path.name.lower().endswith(".npz"):
                with zf.open(info) as fh:
                    head = fh.read(6)
                    if head == b"\x93NUMPY":
                        with zf.open(info) as again:
                            why = _npy_refusal(again)
                        if why:
                            return f"member {info.filename} {why}"
                    elif len(head) >= 2 and head[0] == 0x80 and head[1] in (2, 3, 4, 5):
                        return f"member {info.filename} is a pickle stream"
    return None


# -- running --------------------------------------------------------------------------------------
def _run(source: Path, root: Path, trust_plugin: bool, say: Callable[[str], None]) -> BundleRun:
    say("checking the bundle")
    checked = check_bundle(root)
    if checked.plugin_files and not trust_plugin:
        files = checked.plugin_files
        shown = ", ".join(files[:4]) + (f" (and {len(files) - 4} more code files)"
                                        if len(files) > 4 else "")
        raise UsageError(f"the bundle carries plugin code that repro.py would run: {shown}; read "
                         "it, then pass --trust-plugin to run it")
    say(f"running the bundle's repro.py (finding {checked.finding})")
    limit = checked.timeout_s + GRACE_S
    with tempfile.TemporaryDirectory(prefix="fuzzconv-pycache-") as pycache:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env["PYTHONPYCACHEPREFIX"] = pycache
        try:
            proc = subprocess.run([sys.executable, "repro.py"], cwd=root, env=env,
                                  capture_output=True, text=True, timeout=limit,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise UsageError(f"the bundle's repro.py did not finish within {limit:g} s") from None
    lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    if VERDICTS.get(last) != proc.returncode:
        err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        why = err[-1].strip() if err else (last or "no output")
        raise UsageError(f"the bundle's repro.py gave no verdict (exit {proc.returncode}): "
                         f"{why[:300]}")
    if last == "CANNOT RUN":
        missing = next((ln for ln in lines if ln.startswith("cannot import")), "a package is "
                       "missing")
        raise UsageError(f"the bundle's repro.py cannot run here: {missing}")
    return BundleRun(source, checked.finding, checked.symptom, last == "REPRODUCED",
                     proc.returncode, proc.stdout, checked.plugin_files if trust_plugin else [])
