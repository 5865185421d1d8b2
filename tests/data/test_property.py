"""The synthetic benchmark's defining property, checked by learning: frames alone say nothing, motion does.

Two classifiers with the same small CNN, the same optimizer and the same number of steps, trained on the
same decoded videos (real files, real decord) and tested on unseen scenes (groups):

    per-frame   one frame                          ─▶ CNN ─▶ logits, averaged over the video's frames
    temporal    (mean, difference) of frames t, t+1 ─▶ CNN ─▶ logits, averaged over the video's pairs

The per-frame model sees everything a single frame holds (and more pixels than the difference) yet must
stay near chance; the two-frame model, the smallest possible temporal model, must clearly learn.
The frames are 32x32 with speed=2, so motion in pixels per frame matches the 64x64 default.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autovid.data.decoding import read_frames
from autovid.data.manifest import build_manifest
from autovid.data.synthetic import synthesize
from autovid.data.transforms import MEAN, STD

CLASSES = 10
CHANCE = 1 / CLASSES


def small_cnn(in_channels: int, num_classes: int, width: int = 16) -> nn.Module:
    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        nn.BatchNorm2d(in_channels), *block(in_channels, width, 1), *block(width, 2 * width, 2),
        *block(2 * width, 2 * width, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes),
    )


def fit_and_score(views: torch.Tensor, labels: torch.Tensor, train: torch.Tensor, *, epochs: int = 20) -> float:
    """Train on random views of the training videos; return test accuracy of view-averaged logits.

    views: [N, V, C, H, W] (V views per video: frames or frame pairs); labels [N]; train: bool [N].
    """
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = small_cnn(views.shape[2], CLASSES)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x_train, y_train = views[train], labels[train]
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(x_train), generator=gen).split(32):
            pick = torch.randint(views.shape[1], (len(batch), 2), generator=gen)  # two views per video
            x = x_train[batch[:, None], pick].flatten(0, 1)
            loss = F.cross_entropy(model(x), y_train[batch].repeat_interleave(2))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    x_test, y_test = views[~train], labels[~train]
    with torch.no_grad():
        logits = model(x_test.flatten(0, 1)).view(len(x_test), views.shape[1], CLASSES).mean(1)
    return (logits.argmax(1) == y_test).float().mean().item()


@pytest.mark.slow
def test_per_frame_model_is_at_chance_and_two_frame_model_learns(tmp_path: Path) -> None:
    root = synthesize(tmp_path / "syn", classes=CLASSES, videos_per_class=40, groups=20, test_groups=6,
                      size=32, frames=12, speed=2.0, seed=0)
    df = build_manifest(root, "ucf101", workers=2)
    assert (df["status"] == "ok").all()
    frames = np.stack([read_frames(p, np.arange(12)) for p in df["path"]])  # [N, T, H, W, 3] uint8
    x = torch.from_numpy(frames).permute(0, 1, 4, 2, 3).float().div(255)
    x = (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)  # [N, T, 3, H, W]
    labels = torch.tensor(df["label"].to_numpy())
    train = torch.tensor((df["split"] == "train").to_numpy())
    assert train.sum() == 10 * 28 and (~train).sum() == 10 * 12

    per_frame = fit_and_score(x, labels, train)
    pairs = torch.cat([(x[:, 1:] + x[:, :-1]) / 2, x[:, 1:] - x[:, :-1]], dim=2)  # [N, T-1, 6, H, W]
    temporal = fit_and_score(pairs, labels, train)

    assert per_frame < 2 * CHANCE, f"per-frame accuracy {per_frame:.2f}: appearance leaks the class"
    assert temporal > 3 * CHANCE and temporal > per_frame + 0.15, f"temporal {temporal:.2f} vs {per_frame:.2f}"
