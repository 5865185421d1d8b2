"""Shared pytest fixtures: deterministic torch and a cap on threads so tests behave on 2-core CI."""

from __future__ import annotations

import torch

torch.set_num_threads(2)
