"""Execution fast path chosen by device: a torch.compile'd forward that shares the model's parameters."""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from autovid.nas.fused import FusedMixedOp

log = logging.getLogger(__name__)

__all__ = ["MODES", "FastPath", "Mode", "accelerate", "compile_options", "preferred_memory_format"]

Mode = Literal["off", "auto", "compile"]
MODES: tuple[str, ...] = ("off", "auto", "compile")

# Every network structure (the supernet, each derived network; instances of one structure share entries) times
# train/eval, grad on/off and batch shape is one compiled entry on the code object of VideoNet.forward, which
# SuperNet and Network share. With dynamo's default limit of 8, a process that searches, evaluates and then
# retrains would silently fall back to eager. FastPath keeps recompiles to those few, so a higher ceiling only
# removes that cliff.
_RECOMPILE_LIMIT = 64


def compile_options(device: torch.device | str) -> dict[str, Any]:
    """``torch.compile`` keyword arguments of the fast path on ``device``.

    CPU (``mode="compile"`` only; measured on the quickstart supernet's weight step, B=16, 1 thread): mode
    "default". "reduce-overhead" only adds CUDA graphs, which CPU does not have; "max-autotune-no-cudagraphs"
    autotunes GEMM templates (one Linear here, the convolutions stay oneDNN calls) and ran no faster (1.75 s vs
    1.65-1.76 s). ``dynamic=None``: the first batch shape compiles static; the second (the last, smaller batch of
    a ``drop_last=False`` loader, a multi-clip evaluation) compiles one dynamic-batch graph (3.7 min) that serves
    every later size without recompiling, and its kernels were no slower (1.81 s vs 1.82-2.09 s static in the
    same run). ``dynamic=False`` paid a full static recompile (~5 min on two busy cores) for every new size.

    CUDA (not measured: no GPU was available when this was chosen): ``mode="reduce-overhead"`` (CUDA graphs),
    ``dynamic=False``. On an H200 a supernet step ran at 0.2 % of the matmul peak, bound by kernel launches
    (docs/results.md): thousands of small kernels (7 operators per edge; at PC-DARTS K=4 on C/4 channels), which
    CUDA graphs replay as one launch per graph. Graphs want static shapes, hence ``dynamic=False`` (one recording
    per batch shape: training batch, last batch, evaluation batch). A graph that cannot be recorded (e.g. a
    mutated input that is not a parameter or buffer) runs inductor's kernels without CUDA graphs, as "default"
    would: slower, never wrong. "max-autotune-no-cudagraphs" was not chosen: autotuning hundreds of convolution
    shapes takes tens of minutes of compiling, for 4-16-channel convolutions whose kernel choice is not what
    bounds the step.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return {"mode": "reduce-overhead", "dynamic": False}
    return {"mode": "default", "dynamic": None}


def preferred_memory_format(device: torch.device | str) -> torch.memory_format:
    """The activation layout for ``VideoNet.set_memory_format`` on ``device``: channels_last_3d (NDHWC) on CPU,
    contiguous (NCDHW) elsewhere.

    CPU (quickstart supernet weight step, B=16, 1 thread): NDHWC lets ``ops.conv3d_views`` run the factorized
    kernels as 2D oneDNN convolutions: eager 1.04 s vs 2.28 s on NCDHW, compiled 1.65 s vs 2.66 s. CUDA: NCDHW,
    ~1.35x faster in fp32 eager on an H200 (docs/results.md); bf16 and compiled layouts on CUDA were not
    measured (inductor also chooses convolution layouts itself when it compiles).
    """
    return torch.channels_last_3d if torch.device(device).type == "cpu" else torch.contiguous_format


def accelerate(
    model: nn.Module,
    *,
    device: torch.device | str,
    mode: str,
    backend: str = "inductor",
    options: dict[str, Any] | None = None,
) -> nn.Module:
    """The module to call for the forward passes of the weight step, the train step and evaluation.

    ``mode``: ``off`` returns ``model`` itself; ``auto`` compiles on CUDA only; ``compile`` compiles on any
    device. On CPU the hand-fused eager ops of nas/fused.py are the fast path: compiled, the quickstart
    supernet's weight step was slower (1.65 s vs 1.05 s eager; reference mixed op 1.70 s vs 1.33 s) after a
    cold compile of 2-6 minutes on two cores. A compiled result is a ``FastPath`` around ``model``: same
    parameters and buffers (nothing is copied), ``state_dict`` without a prefix, ``train``/``eval`` shared.

    ``backend`` and ``options`` (``torch.compile`` keyword arguments overriding ``compile_options(device)``)
    are for tests (``backend="aot_eager"`` traces forward and backward without inductor's slow C++ builds)
    and for benchmarking other modes.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    device = torch.device(device)
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return model
    if isinstance(model, FastPath):
        return model
    kwargs = {**compile_options(device), **(options or {})}
    if backend != "inductor":
        kwargs.pop("mode", None)  # modes are inductor options; other backends reject them
    if kwargs.get("mode") == "default":
        kwargs.pop("mode")  # torch.compile's own default
    if torch._dynamo.config.recompile_limit < _RECOMPILE_LIMIT:
        torch._dynamo.config.recompile_limit = _RECOMPILE_LIMIT
    log.info("fast path: torch.compile(%s, backend=%s, %s) on %s", type(model).__name__, backend, kwargs, device)
    return FastPath(model, torch.compile(model, backend=backend, **kwargs))


class FastPath(nn.Module):
    """``model(x)`` through a compiled forward, or eagerly where compiling would only buy recompiles.

    α are parameters, so the compiled graph takes them as inputs: an architect step, an optimizer step or a new
    learning rate changes no guard. What does change the graph, and therefore runs eagerly here:

    - single-path mode of the supernet (``set_path``, random search with weight sharing): every sampled path
      is another graph, one compile per step;
    - a derived ``Network`` training with drop path: its masks come from a ``torch.Generator`` built in the
      forward (a graph break per edge), and the probability changes every epoch (a recompile per epoch);
    - BatchNorm with ``momentum=None`` (precise BN via ``torch.optim.swa_utils.update_bn``): the cumulative
      average reads ``num_batches_tracked`` as a Python number (a graph break) and the momentum is a guard;
    - a forward without grad (evaluation) of a supernet with the fused mixed op: without grad, dynamo (torch
      2.13) inlines the fused node sum's autograd.Function and breaks the graph on it (28 graphs for the tiny
      supernet instead of 1). With grad it is one graph; the reference mixed op, CUDA's, is one graph in both.

    Attributes and methods not defined here (``weight_parameters``, ``arch_parameters``, ``genotype``,
    ``drop_path_prob``, ...) are the model's, read and written: the wrapper can stand in for the model in the
    epoch loops, and ``fast.drop_path_prob = p`` reaches the network.
    """

    def __init__(self, model: nn.Module, compiled: Any) -> None:
        super().__init__()
        self.model = model
        # Not a registered submodule: torch.compile's wrapper would add a second copy of every parameter name.
        object.__setattr__(self, "_compiled", compiled)
        # Precomputed once: the check runs before every forward and must not walk the module tree each time.
        object.__setattr__(
            self, "_norms", [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        )
        object.__setattr__(self, "_fused", any(isinstance(m, FusedMixedOp) for m in model.modules()))

    # The wrapper's mode is the model's: evaluate() saves `.training` and restores it, which must not read a
    # stale flag when someone switched the model (not the wrapper) to train or eval.
    @property  # type: ignore[override]
    def training(self) -> bool:
        return bool(self.model.training)

    @training.setter
    def training(self, mode: bool) -> None:
        model = self.__dict__.get("_modules", {}).get("model")
        if model is not None:  # nn.Module.__init__ sets the flag before the model exists
            model.training = mode

    def eager_reason(self) -> str | None:
        """Why the next forward runs eagerly (see the class docstring), or None when it runs compiled."""
        model = self.model
        if getattr(model, "_path", None) is not None:
            return "single-path mode"
        if model.training and float(getattr(model, "drop_path_prob", 0.0) or 0.0) > 0:
            return "drop path"
        if any(m.momentum is None for m in self._norms):
            return "BatchNorm momentum=None (precise BN)"
        if self._fused and not torch.is_grad_enabled():
            return "no-grad forward of the fused mixed op"
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.eager_reason() is not None:
            return self.model(x)
        return self._compiled(x)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross entropy of the logits, through the fast path (``VideoNet.loss`` would run eagerly)."""
        return F.cross_entropy(self(x), y)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """The model's state dict, keys unprefixed: checkpoints load into an unwrapped model."""
        return self.model.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        return self.model.load_state_dict(state_dict, strict=strict, assign=assign)

    def __setattr__(self, name: str, value: Any) -> None:
        model = self.__dict__.get("_modules", {}).get("model")
        if (
            model is not None
            and not name.startswith("_")
            and name not in ("model", "training")
            and hasattr(model, name)
        ):
            setattr(model, name, value)  # e.g. drop_path_prob: set on the wrapper, it would never reach the model
        else:
            super().__setattr__(name, value)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            model = self.__dict__.get("_modules", {}).get("model")
            if model is None:  # half-built (unpickling, copying): no model to ask
                raise
            return getattr(model, name)
