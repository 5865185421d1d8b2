"""A network as a torch.export graph and an ONNX file, and its latency in ONNX Runtime on that graph.

Below `autovid.export` (which writes, checks and reads exported files) and beside the sessions (which time
searched networks in the deployment runtime): both use these, neither imports the other.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autovid.errors import RunFailed

METADATA_KEY = "autovid"  # the pt2 extra file, the ONNX metadata_props key and the MLflow metadata key
INPUT_NAME, OUTPUT_NAME = "clips", "logits"
MAX_BATCH = 4096  # upper bound of the dynamic batch dimension (torch.export needs one to reason about shapes)


def one_line(exc: BaseException) -> str:
    """An exception's message on one line of at most 300 characters (the CLI's errors are one line each)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300] + "..." if len(text) > 300 else text


def trace(model: nn.Module, clips: torch.Tensor) -> torch.export.ExportedProgram:
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's own deprecations, not the user's to act on
            return torch.export.export(model, (clips,), dynamic_shapes=({0: batch},))
    except Exception as exc:  # noqa: BLE001 - an operator torch.export cannot trace: the export fails, in one line
        raise RunFailed(f"torch.export could not trace the network: {one_line(exc)}") from None


def save_onnx(program: torch.export.ExportedProgram, clips: torch.Tensor, meta: Mapping[str, Any], path: Path) -> None:
    import logging

    # torch.onnx warns that torchvision's detection operators are not registered (irrelevant here), and onnxscript's
    # optimiser logs every rewrite at INFO: neither is for the user
    for name in ("torch.onnx", "onnxscript", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            onnx_program = torch.onnx.export(program, (clips,), dynamo=True, input_names=[INPUT_NAME],
                                             output_names=[OUTPUT_NAME], verbose=False)
    except Exception as exc:  # noqa: BLE001 - an operator without an ONNX translation
        raise RunFailed(f"ONNX export failed: {one_line(exc)}") from None
    if onnx_program is None:  # torch returns None only when given a file to write; it was given none
        raise RunFailed("ONNX export returned no program")
    onnx_program.model.metadata_props[METADATA_KEY] = json.dumps(meta)
    onnx_program.save(path, external_data=False)  # one file: these networks are far below protobuf's 2 GB


@dataclass(frozen=True)
class Latency:
    """A forward latency in the deployment runtime: the median of torch.utils.benchmark's blocked timing, its
    interquartile range, and what ran it."""

    median_ms: float
    iqr_ms: float
    runtime: str  # e.g. "onnxruntime 1.23.2 CPUExecutionProvider"
    threads: int  # intra-op threads of the session
    batch: int


def onnx_latency(model: nn.Module, input_shape: tuple[int, ...], batches: tuple[int, ...] = (1,), *,
                 threads: int = 1, warmup: int = 3, max_run_time: float = 2.0) -> list[Latency]:
    """Latency of `model` in ONNX Runtime (CPU) on the graph `autovid export --format onnx` writes: traced by
    torch.export with a dynamic batch and exported by the same code, then loaded into one session with `threads`
    intra-op threads and timed at every batch size of `batches` (`input_shape` is one clip's shape).

    Timing is torch.utils.benchmark's: `warmup` untimed runs (ONNX Runtime allocates on its first runs), then
    `Timer.adaptive_autorange`, which times blocks of runs until the median is stable (IQR / median under 0.1)
    or `max_run_time` seconds have passed; the figure is that median and its IQR. The model stays in eval mode.
    """
    import tempfile

    import onnxruntime as ort
    from torch.utils.benchmark import Timer

    model = model.eval().cpu()
    example = torch.zeros(2, *input_shape)  # a batch above 1: torch.export keeps the batch dimension dynamic
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        save_onnx(trace(model, example), example, {}, path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    runtime = f"onnxruntime {ort.__version__} {session.get_providers()[0]}"
    results = []
    for batch in batches:
        feed = {name: torch.zeros(batch, *input_shape).numpy()}
        for _ in range(warmup):
            session.run(None, feed)
        timer = Timer(stmt="session.run(None, feed)", globals={"session": session, "feed": feed},
                      label="onnxruntime", description=f"batch {batch}")
        measured = timer.adaptive_autorange(threshold=0.1, min_run_time=0.01, max_run_time=max_run_time)
        results.append(Latency(1000.0 * measured.median, 1000.0 * measured.iqr, runtime, threads, batch))
    return results
