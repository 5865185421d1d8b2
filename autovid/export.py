"""Export a retrained network as a self-contained `.pt2` (torch.export) or ONNX model, checked against eager PyTorch."""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from autovid.data.backends import BACKENDS, installed
from autovid.data.dataset import VideoClipDataset
from autovid.data.sampling import ClipSpec
from autovid.engine.checkpoint import load_state
from autovid.engine.onnx import (  # noqa: F401 - METADATA_KEY, one_line and onnx_latency are part of this API
    INPUT_NAME,
    MAX_BATCH,
    METADATA_KEY,
    OUTPUT_NAME,
    Latency,
    one_line,
    onnx_latency,
    save_onnx,
    trace,
)
from autovid.errors import RunFailed, UserError
from autovid.files import check_output, write_text_atomic

ExportFormat = Literal["pt2", "onnx"]
FORMATS: tuple[ExportFormat, ...] = ("pt2", "onnx")
PARITY_TOLERANCE = 1e-4  # max |Δlogit| against eager PyTorch, fp32

Runner = Callable[[torch.Tensor], torch.Tensor]  # float32 [B, K, C, L, H, W] -> float32 [B, num_classes]


@dataclass(frozen=True)
class ExportResult:
    """What `export_model` wrote and how close it is to the eager network."""

    path: Path
    sidecar: Path
    max_abs_diff: float
    parity_video: str
    parity_clips: int
    seconds: float


# --------------------------------------------------------------------------------------- checkpoints, metadata


def load_train_state(path: Path) -> dict[str, Any]:
    """A retrain checkpoint's state (`weights_only` load); a folder means its `state.pt`; anything else: UserError."""
    if path.is_dir():
        path = path / "state.pt"
    state = load_state(path)
    if state.get("kind") != "train":
        raise UserError(f"{path}: a {state.get('kind')} checkpoint, not a retrain's (search checkpoints hold a "
                        "supernet); give the state.pt printed by `autovid train`")
    return state


def model_metadata(state: Mapping[str, Any]) -> dict[str, Any]:
    """Everything a consumer needs beside the weights: class names in logit order, the input spec (K, L, crop,
    mean/std, modality, stride, mode, resize and the clips per video it was evaluated with), the genotype JSON
    and the autovid version. JSON-able plain values; `autovid predict` reads it from .pt2, ONNX and MLflow models.
    """
    from autovid.config import validate_config
    from autovid.engine.evaluation import network_metadata

    meta = network_metadata(state)
    test_clips = validate_config(state["config"], source="checkpoint").data.test_clips
    meta["input"] = {**meta["input"], "name": INPUT_NAME, "test_clips": test_clips}
    return meta


def eager_model(state: Mapping[str, Any]) -> nn.Module:
    """The checkpoint's network on the CPU in eval mode, built as the retrain built it and its weights loaded."""
    from autovid.engine.evaluation import trained_network

    return trained_network(state)[0]


def check_destination(path: Path, *, what: str = "--out") -> Path:
    """Refuse, before any work, an output that is a folder or whose folder is missing or not writable."""
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise UserError(f"{what} {path}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path}: no permission to write in {parent}")
    return path


def default_destination(state_path: Path, fmt: ExportFormat) -> Path:
    """`run/state.pt` -> `run/state.pt2` or `run/state.onnx` (a folder argument exports into that folder)."""
    base = state_path / "state.pt" if state_path.is_dir() else state_path
    return base.with_suffix(f".{fmt}")


# --------------------------------------------------------------------------------------------------- export


def export_model(state_path: Path, fmt: ExportFormat, out: Path | None = None, *,
                 overwrite: bool = False) -> ExportResult:
    """Export the retrain checkpoint at `state_path` to `out`, verify the written file against eager PyTorch on a
    real test clip, then move it into place with its metadata sidecar `<out>.json`. Neither may be the checkpoint,
    and an existing one is replaced only with `overwrite` (checked before any work)."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    out = out or default_destination(state_path, fmt)
    sidecar = out.with_name(out.name + ".json")
    inputs = [state_path, state_path / "state.pt"] if state_path.is_dir() else [state_path]
    for path in (out, sidecar):
        check_output(path, inputs, overwrite=overwrite, flag="--out" if path == out else "--out's metadata file")
    out = check_destination(out)
    state = load_train_state(state_path)
    started = time.perf_counter()
    meta = model_metadata(state)
    model = eager_model(state)
    clips, video = real_test_clips(state, meta)
    # a fresh name (never a stale file or a link left there); torch.export.save warns about a name not ending in .pt2
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp.{fmt}")
    try:
        program = trace(model, clips)
        (_save_pt2 if fmt == "pt2" else save_onnx)(program, clips, meta, tmp)
        runner, _ = (load_pt2 if fmt == "pt2" else load_onnx)(tmp)
        diff = max_abs_diff(model, runner, clips)
        if not diff <= PARITY_TOLERANCE:  # `not <=`: a NaN difference fails too
            raise RunFailed(f"export parity check failed: max |Δlogit| = {diff:.3g} against eager PyTorch on {video} "
                            f"(tolerance {PARITY_TOLERANCE:g}); {out} not written")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    write_text_atomic(sidecar, json.dumps(meta, indent=2) + "\n")
    return ExportResult(out, sidecar, diff, video, int(clips.shape[0]), time.perf_counter() - started)


def real_test_clips(state: Mapping[str, Any], meta: Mapping[str, Any]) -> tuple[torch.Tensor, str]:
    """At least two test-time clips `[M, K, C, L, H, W]` of the first usable test video of the checkpoint's data,
    and its path: the example input of the export (a batch above 1, so the batch dimension stays dynamic) and of
    the parity check."""
    from autovid.config import validate_config
    from autovid.engine.setup import prepare_manifest

    cfg = validate_config(state["config"], source="checkpoint")
    manifest = prepare_manifest(cfg.data)
    usable = manifest[(manifest["status"] == "ok") & (manifest["split"] == "test")]
    if usable.empty:
        raise UserError("the parity check needs a test video of the checkpoint's data, and its manifest has none")
    path, frames = str(usable["path"].iloc[0]), int(usable["num_frames"].iloc[0])
    reader = input_dataset(meta["input"], [(path, frames)], clips=max(2, int(meta["input"]["test_clips"])))
    try:
        return reader.test_clips(0), path
    except Exception as exc:  # noqa: BLE001 - any decode failure: the check cannot run, the export must not pass
        raise RunFailed(f"export parity check: cannot decode the test video {path} ({one_line(exc)})") from None
    finally:
        reader.close()


def input_clip_spec(spec: Mapping[str, Any]) -> ClipSpec:
    """The ClipSpec of an exported network's input metadata (``metadata["input"]``, checked: see
    ``autovid.predict.metadata_problem``)."""
    resize = spec.get("resize")
    return ClipSpec(
        num_segments=int(spec["num_segments"]), frames_per_segment=int(spec["frames_per_segment"]),
        stride=int(spec["stride"]), mode=spec["mode"], modality=spec["modality"],
        resize=(int(resize[0]), int(resize[1])) if resize else None, crop_size=int(spec["crop_size"]),
    )


def input_decoder(spec: Mapping[str, Any]) -> str:
    """The decoder the network was trained with (its metadata's ``input.decoder``) where installed here, else
    ``auto``: frames mean the same for every backend, and a network exported on x86-64 Linux (decord) must still
    predict on a machine without decord."""
    name = spec.get("decoder")
    return name if isinstance(name, str) and name in BACKENDS and installed(name) else "auto"


def input_dataset(spec: Mapping[str, Any], videos: list[tuple[str, int]], *, clips: int) -> VideoClipDataset:
    """Test-time clips of any ``(path, frame count)`` videos, made exactly as the test loader makes them (the
    data pipeline's own dataset: TSN test sampling, centre crop, RGB difference), normalised as the network saw
    its input (the metadata's mean and std), decoding in an isolated child process: a file that crashes the
    decoder costs that file, not the command. ``dataset.test_clips(i)`` is video ``i``; close it after use."""
    norm = spec["normalization"]
    return VideoClipDataset.of_videos(videos, input_clip_spec(spec), clips=clips, decoder=input_decoder(spec),
                                      mean=tuple(norm["mean"]), std=tuple(norm["std"]))


def _save_pt2(program: torch.export.ExportedProgram, clips: torch.Tensor, meta: Mapping[str, Any], path: Path) -> None:
    torch.export.save(program, path, extra_files={METADATA_KEY: json.dumps(meta)})


def max_abs_diff(model: nn.Module, runner: Runner, clips: torch.Tensor) -> float:
    """Largest |Δlogit| between eager `model` and `runner` on `clips` and on its first clip alone (batch 1)."""
    with torch.no_grad():
        return max(float((runner(x) - model(x)).abs().max()) for x in (clips, clips[:1]))


# ---------------------------------------------------------------------------------------------------- loading


def load_pt2(path: Path) -> tuple[Runner, dict[str, Any] | None]:
    """An exported program and its autovid metadata (None when absent), after checking that nothing in the archive
    needs more than `torch.load(weights_only=True)` (torch.export.load would unpickle it without restriction)."""
    check_pt2_pickle_free(path)
    extra = {METADATA_KEY: ""}
    try:
        module = torch.export.load(path, extra_files=extra).module()
    except Exception as exc:  # noqa: BLE001 - a foreign or truncated archive
        raise UserError(f"{path}: not a loadable .pt2 program ({one_line(exc)})") from None

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(x)

    return run, _parse_metadata(extra[METADATA_KEY], path)


def load_onnx(path: Path) -> tuple[Runner, dict[str, Any] | None]:
    """An onnxruntime CPU session and its autovid metadata (None when absent)."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for foreign files
        raise UserError(f"{path}: not a loadable ONNX model ({one_line(exc)})") from None
    name = session.get_inputs()[0].name
    meta = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY, "")

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: x.numpy()})[0])

    return run, _parse_metadata(meta, path)


def _parse_metadata(text: str, path: Path) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError:
        raise UserError(f"{path}: its autovid metadata is not valid JSON") from None
    return meta if isinstance(meta, dict) else None


_PAYLOAD_CONFIG = re.compile(r"(?:^|/)data/(?:weights|constants)/[^/]+_config\.json$")
# version, byteorder, archive_format...: a short token cannot hold a pickle (GLOBAL needs two newlines)
_TOKEN = re.compile(rb"[A-Za-z0-9._-]{1,64}\n?")


def check_pt2_pickle_free(path: Path) -> None:
    """Raise UserError unless every record of the .pt2 archive is JSON, a short token, raw tensor bytes or a pickle
    that `torch.load(weights_only=True)` accepts: the guarantee autovid's checkpoints give, checked before
    torch.export.load (which falls back to unrestricted unpickling, and would load compiled AOTInductor code)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{path}: not a .pt2 archive ({one_line(exc)})") from None
    with archive:
        raw = _raw_tensor_records(archive)
        for info in archive.infolist():
            if info.is_dir() or info.filename in raw or _is_plain(archive.read(info)):
                continue
            try:
                torch.load(io.BytesIO(archive.read(info)), map_location="cpu", weights_only=True)
            except Exception:  # noqa: BLE001 - anything beyond tensors and plain containers
                raise UserError(f"{path}: refused: its record {info.filename} is neither data nor a plain tensor "
                                "pickle (loading it could run code from the file)") from None


def _raw_tensor_records(archive: zipfile.ZipFile) -> set[str]:
    """Records the payload configs declare as raw tensor bytes (`use_pickle: false`): read, never unpickled."""
    raw: set[str] = set()
    pickled: set[str] = set()  # a record named by a pickled entry too is checked as a pickle
    for name in archive.namelist():
        if not _PAYLOAD_CONFIG.search(name):
            continue
        folder = name.rsplit("/", 1)[0]
        try:
            entries = json.loads(archive.read(name)).get("config", {}).values()
        except (ValueError, AttributeError):
            continue  # not a config: its records then count as pickles, and are checked as such
        for entry in entries:
            if not isinstance(entry, dict) or "/" in str(entry.get("path_name", "/")):
                continue
            plain = entry.get("use_pickle") is False and entry.get("tensor_meta") is not None
            (raw if plain else pickled).add(f"{folder}/{entry['path_name']}")
    return raw - pickled


def _is_plain(content: bytes) -> bool:
    """JSON or a short token: never unpickled (a JSON document cannot end in pickle's STOP opcode)."""
    if _TOKEN.fullmatch(content):
        return True
    try:
        json.loads(content)
    except ValueError:  # UnicodeDecodeError included
        return False
    return True


