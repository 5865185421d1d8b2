"""`autovid predict`: top-k classes of any videos with a retrained, exported or MLflow-logged network (TSN clips)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from autovid.data.decoding import DecoderLimitation, DecodingProcessError
from autovid.errors import RunFailed, UserError
from autovid.export import (
    METADATA_KEY,
    Runner,
    eager_model,
    input_clip_spec,
    input_dataset,
    input_decoder,
    load_onnx,
    load_pt2,
    load_train_state,
    model_metadata,
    one_line,
)
from autovid.safe_yaml import shorten

MLFLOW_SCHEMES = ("runs:/", "models:/")
SPEC_KEYS = ("num_segments", "frames_per_segment", "stride", "mode", "modality", "crop_size", "normalization")
MAX_SIDE, MAX_CLIPS, MAX_CLIP_VALUES = 4096, 1024, 1 << 28  # generous bounds of an input spec's fields
SPEC_BOUNDS = {"num_segments": 1024, "frames_per_segment": 1024, "stride": 1024, "crop_size": MAX_SIDE}
MODES, MODALITIES = ("segments", "dense"), ("rgb", "rgb_diff")
CSV_COLUMNS = ("video", "rank", "class", "probability")
NATIVE_WIDTH_BUG = ("decord cannot decode frames of this width (a decord 0.6 bug for a few widths, such as 16, 24, 48 "
                    "and 72 pixels); re-encode the video at another width")


@dataclass(frozen=True)
class Predictor:
    """A network as a function of a clip batch, with the metadata that says how to make its input."""

    run: Runner
    metadata: dict[str, Any]
    source: str  # what MODEL was: checkpoint, pt2, onnx or mlflow

    @property
    def class_names(self) -> list[str]:
        return [str(c) for c in self.metadata["class_names"]]

    @property
    def spec(self) -> dict[str, Any]:
        return self.metadata["input"]


def load_predictor(model: str, *, tracking_uri: str | None = None) -> Predictor:
    """MODEL: a retrain `state.pt` (or its folder), an exported `.pt2` / `.onnx`, or an MLflow model URI."""
    if model.startswith(MLFLOW_SCHEMES):
        return _mlflow_predictor(model, tracking_uri)
    path = Path(model)
    if not path.exists():
        raise UserError(f"model not found: {path}")
    if path.suffix == ".pt2":
        run, meta = load_pt2(path)
        source = "pt2"
    elif path.suffix == ".onnx":
        run, meta = load_onnx(path)
        source = "onnx"
    else:
        state = load_train_state(path)
        net, meta, source = eager_model(state), model_metadata(state), "checkpoint"

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return net(x)

    return _probed(Predictor(run, _checked(meta, model), source), model)


def _mlflow_predictor(uri: str, tracking_uri: str | None) -> Predictor:
    from autovid.tracking import load_pytorch_model

    net, logged = load_pytorch_model(uri, tracking_uri=tracking_uri)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return net(x)

    return _probed(Predictor(run, _checked(logged.get(METADATA_KEY), uri), "mlflow"), uri)


def _checked(meta: Any, model: str) -> dict[str, Any]:
    """The autovid metadata, refused in one line when absent, incomplete or ill-typed: it says how to cut the
    network's input and what its logits mean, and an edited file must fail here, not halfway or with wrong labels."""
    if not isinstance(meta, Mapping) or not isinstance(meta.get("input"), Mapping) or not meta.get("class_names"):
        raise UserError(f"{model}: no autovid metadata (class names, input spec); export it with `autovid export`")
    missing = [k for k in SPEC_KEYS if k not in meta["input"]]
    if missing:
        raise UserError(f"{model}: its autovid metadata lacks input.{', input.'.join(missing)}")
    problem = metadata_problem(meta)
    if problem:
        raise UserError(f"{model}: its autovid metadata is invalid: {problem}")
    return dict(meta)


def _count(value: Any, low: int, high: int) -> bool:
    """An integer (not a bool, not 2.0) in [low, high]."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def metadata_problem(meta: Mapping[str, Any]) -> str | None:
    """What is wrong with exported metadata (types and ranges of every field predict uses), or None. The bounds
    are far above any trained network and keep one clip of an edited spec below a gigabyte."""
    names = meta["class_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        return "class_names must be a list of non-empty strings"
    if len(set(names)) != len(names):
        return "class_names names a class twice"
    spec = meta["input"]
    for key, high in SPEC_BOUNDS.items():
        if not _count(spec[key], 1, high):
            return f"input.{key} must be an integer in 1..{high}, got {shorten(repr(spec[key]))}"
    if spec["mode"] not in MODES:
        return f"input.mode must be one of {', '.join(MODES)}, got {shorten(repr(spec['mode']))}"
    if spec["modality"] not in MODALITIES:
        return f"input.modality must be one of {', '.join(MODALITIES)}, got {shorten(repr(spec['modality']))}"
    resize = spec.get("resize")
    if resize is not None and not (isinstance(resize, list) and len(resize) == 2
                                   and all(_count(v, 1, MAX_SIDE) for v in resize)):
        return f"input.resize must be null or [height, width] in 1..{MAX_SIDE}, got {shorten(repr(resize))}"
    if "test_clips" in spec and not _count(spec["test_clips"], 1, MAX_CLIPS):
        return f"input.test_clips must be an integer in 1..{MAX_CLIPS}, got {shorten(repr(spec['test_clips']))}"
    norm = spec["normalization"]
    if not isinstance(norm, Mapping):
        return "input.normalization must be a mapping with mean and std"
    for key in ("mean", "std"):
        values = norm.get(key)
        if not (isinstance(values, list) and len(values) == 3 and all(_number(v) for v in values)):
            return f"input.normalization.{key} must be 3 finite numbers (R, G, B), got {shorten(repr(values))}"
    if not all(v > 0 for v in norm["std"]):
        return f"input.normalization.std must be positive, got {norm['std']}"
    shape = list(input_clip_spec(spec).shape)
    if int(np.prod(shape)) > MAX_CLIP_VALUES:
        return f"one clip of input shape {shape} is larger than {MAX_CLIP_VALUES:,} values"
    if "shape" in spec and spec["shape"] != shape:
        return f"input.shape {shorten(repr(spec['shape']))} is not the shape its fields give, {shape}"
    return None


def _probed(predictor: Predictor, model: str) -> Predictor:
    """`predictor` once the network has run on one blank clip of the shape its metadata describes and returned a
    logit per class name: metadata that does not belong to the network fails here in one line, before any video
    (fewer names than logits would print wrong labels, more would fail at the first video)."""
    shape = input_clip_spec(predictor.spec).shape
    try:
        logits = predictor.run(torch.zeros((1, *shape)))
    except Exception as exc:  # noqa: BLE001 - a shape the network or the exported program refuses
        raise UserError(f"{model}: the network does not take the input its metadata describes ({list(shape)}): "
                        f"{one_line(exc)}") from None
    classes = len(predictor.class_names)
    if tuple(logits.shape) != (1, classes):
        raise UserError(f"{model}: the network returns logits of shape {list(logits.shape)} for one clip, but its "
                        f"metadata names {classes} classes: the metadata does not belong to this network")
    return predictor


# -------------------------------------------------------------------------------------------------- inference


@dataclass
class PredictionRun:
    """Top-k (class, probability) per predicted video, the videos that could not be read, and the throughput."""

    predictions: list[tuple[str, list[tuple[str, float]]]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    clips: int = 0
    seconds: float = 0.0

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else float("nan")

    def rows(self) -> list[dict[str, Any]]:
        """One row per (video, rank): the table and the CSV."""
        return [{"video": video, "rank": rank, "class": name, "probability": p}
                for video, ranked in self.predictions for rank, (name, p) in enumerate(ranked, start=1)]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows(), columns=list(CSV_COLUMNS))


def predict_videos(predictor: Predictor, videos: Sequence[str], *, clips: int, topk: int,
                   on_failure: Callable[[str, str], None]) -> PredictionRun:
    """Probe every video in child processes, then decode and classify the readable ones, `clips` clips each
    (logits averaged, as the evaluator does); `on_failure(video, reason)` is called once per unreadable one."""
    result = PredictionRun()
    readable: list[tuple[str, int]] = []
    for video, frames, reason in probe_videos(videos, decoder=input_decoder(predictor.spec)):
        if frames is None:
            result.failures.append((video, reason))
            on_failure(video, reason)
        else:
            readable.append((video, frames))
    if not readable:
        return result
    reader = input_dataset(predictor.spec, [(str(Path(v).absolute()), n) for v, n in readable], clips=clips)
    k = min(topk, len(predictor.class_names))
    started = time.perf_counter()
    try:
        for i, (video, _) in enumerate(readable):
            try:
                batch = reader.test_clips(i)
            except DecodingProcessError as exc:  # the decoder could not start: the installation, not the file
                raise RunFailed(f"decoding failed for every video: {exc}") from None
            except Exception as exc:  # noqa: BLE001 - this file's fault (native crashes included): report, go on
                # a DecoderLimitation here is at the file's own width: only re-encoding it helps
                reason = NATIVE_WIDTH_BUG if isinstance(exc, DecoderLimitation) else one_line(exc)
                result.failures.append((video, reason))
                on_failure(video, reason)
                continue
            result.predictions.append((video, top_classes(predictor.run(batch), predictor.class_names, k)))
            result.clips += int(batch.shape[0])
    finally:
        result.seconds = time.perf_counter() - started
        reader.close()
    return result


def top_classes(logits: torch.Tensor, names: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The `k` most probable classes of one video from its clips' logits `[M, N]`: mean over clips, then softmax."""
    probs = torch.softmax(logits.float().mean(dim=0), dim=0)
    values, indices = probs.topk(k)
    return [(names[i], float(v)) for v, i in zip(values.tolist(), indices.tolist())]


def probe_videos(videos: Sequence[str], *, decoder: str = "auto") -> list[tuple[str, int | None, str]]:
    """(video, frame count or None, reason) per video, probed in child processes as `autovid data index` does."""
    from autovid.data.manifest import not_a_regular_file, probe_files

    special = [not_a_regular_file(v) for v in videos]  # folders, FIFOs...: never opened (a FIFO would block)
    probed = iter(probe_files([str(Path(v).absolute()) for v, o in zip(videos, special) if o is None], decoder=decoder))
    outcomes = [o if o is not None else next(probed) for o in special]
    found = []
    for video, outcome in zip(videos, outcomes):
        info = outcome.info
        found.append((video, info.num_frames if info else None, "" if info else f"{outcome.reason} ({outcome.detail})"))
    return found

