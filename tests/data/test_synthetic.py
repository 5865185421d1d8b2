"""The synthetic motion benchmark: layout, splits, determinism, caching, codecs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autovid.data.decoding import read_frames
from autovid.data.manifest import build_manifest, summarize_manifest
from autovid.data.synthetic import (
    MOTIONS,
    RADIUS,
    SynthParams,
    _appearance,
    _track,
    ensure_synthetic,
    render_video,
    synthesize,
)
from autovid.errors import UserError

SMALL = dict(classes=3, videos_per_class=4, groups=4, test_groups=1, size=32, frames=8)


def test_layout_and_split_files_follow_ucf101(tmp_path: Path) -> None:
    root = synthesize(tmp_path / "syn", **SMALL)
    lists = root / "ucfTrainTestlist"
    assert (lists / "classInd.txt").read_text().splitlines() == ["1 MoveUp", "2 MoveDown", "3 MoveSideways"]
    train = (lists / "trainlist01.txt").read_text().splitlines()
    test = (lists / "testlist01.txt").read_text().splitlines()
    assert len(train) == 9 and len(test) == 3
    assert "MoveDown/v_MoveDown_g02_c01.avi 2" in train and "MoveUp/v_MoveUp_g01_c01.avi" in test
    train_groups = {line.split("_g")[1][:2] for line in train}
    test_groups = {line.split("_g")[1][:2] for line in test}
    assert not train_groups & test_groups
    df = build_manifest(root, "ucf101", workers=2)
    summary = summarize_manifest(df)
    assert summary["ok"] == 12 and summary["classes"] == 3 and summary["frames"] == 12 * 8
    assert set(df["width"]) == {32} and set(df["num_frames"]) == {8}


def test_generation_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = synthesize(tmp_path / "a", **SMALL)
    b = synthesize(tmp_path / "b", **SMALL)
    c = synthesize(tmp_path / "c", **{**SMALL, "seed": 1})
    rel = "MoveDown/v_MoveDown_g03_c01.avi"
    frames = [read_frames(r / rel, np.arange(8)) for r in (a, b, c)]
    assert np.array_equal(frames[0], frames[1]) and not np.array_equal(frames[0], frames[2])


@pytest.mark.parametrize("codec,ext", [("h264", ".mp4"), ("mjpeg", ".avi")])
def test_other_codecs_decode(tmp_path: Path, codec: str, ext: str) -> None:
    root = synthesize(tmp_path / codec, classes=2, videos_per_class=2, groups=2, size=32, frames=6, codec=codec,
                      test_groups=1)
    files = sorted(root.glob(f"*/*{ext}"))
    assert len(files) == 4
    assert read_frames(files[0], np.arange(6)).shape == (6, 32, 32, 3)


def test_ensure_synthetic_generates_once_per_parameter_set(tmp_path: Path) -> None:
    first = ensure_synthetic(tmp_path / "cache", **SMALL)
    stamp = (first / "synthetic.json").stat().st_mtime_ns
    again = ensure_synthetic(tmp_path / "cache", **SMALL)
    assert again == first and (first / "synthetic.json").stat().st_mtime_ns == stamp
    other = ensure_synthetic(tmp_path / "cache", **{**SMALL, "seed": 2})
    assert other != first
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted([first.name, other.name])  # no tmp left


def test_bad_parameters_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="classes"):
        synthesize(tmp_path, classes=len(MOTIONS) + 1)
    with pytest.raises(UserError, match="codec"):
        synthesize(tmp_path, codec="vp9")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="unknown synthetic parameter"):
        ensure_synthetic(tmp_path, colour="red")


def test_every_motion_keeps_the_per_frame_state_distribution() -> None:
    """Position, angle and log-radius of the moving object, pooled over frames, match across classes.

    This is the design property behind "classes differ only in motion": whatever one frame shows, it is
    equally likely under every class. Checked on the generator's state (exact, cheap); the learned check
    on decoded video is test_property.py.
    """
    p = SynthParams(size=64, frames=32)
    lo, hi = np.log(RADIUS[0] * 64), np.log(RADIUS[1] * 64)
    stats = {}
    for motion in MOTIONS:
        x, y, ang, lrad = [], [], [], []
        for i in range(300):
            one = _track(motion, np.random.default_rng([7, i]), p)
            x.append(one.x % 64), y.append(one.y % 64), ang.append(one.angle % (2 * np.pi))
            lrad.append((np.log(one.radius) - lo) / (hi - lo))
        stats[motion] = [np.histogram(np.concatenate(v), bins=4, range=r)[0] / (300 * 32)
                         for v, r in ((x, (0, 64)), (y, (0, 64)), (ang, (0, 2 * np.pi)), (lrad, (0, 1)))]
    for motion, hists in stats.items():
        for h in hists:
            assert np.all(np.abs(h - 0.25) < 0.05), (motion, h)


def test_render_video_shape_and_range() -> None:
    p = SynthParams(size=32, frames=6)
    look = _appearance(np.random.default_rng(0), p)
    video = render_video("Spin", look, np.random.default_rng(1), p)
    assert video.shape == (6, 32, 32, 3) and video.dtype == np.uint8 and video.std() > 10


def test_an_output_folder_that_is_a_file_is_refused_before_rendering(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(UserError, match="exists and is not a folder"):
        synthesize(tmp_path / "file", **SMALL)
    with pytest.raises(UserError, match="which is not a folder"):
        synthesize(tmp_path / "file" / "sub", **SMALL)
    with pytest.raises(UserError, match="which is not a folder"):
        ensure_synthetic(tmp_path / "file" / "cache", **SMALL)
    assert (tmp_path / "file").read_text() == "keep me"


def test_generator_and_config_defaults_agree() -> None:
    # the config (`data.synthetic.*`, and through it the CLI's `data synth` flags) and the generator's own
    # parameters describe one benchmark: the same defaults, field by field
    import dataclasses

    from autovid.config import SyntheticConfig
    from autovid.data.synthetic import SynthParams

    generator = {f.name: f.default for f in dataclasses.fields(SynthParams)}
    config = SyntheticConfig().model_dump()
    assert config == {k: generator[k] for k in config}


def test_the_claims_benchmark_shares_no_video_with_another_config() -> None:
    """`ablation` (the config claims are made on) draws its own scenes and videos: none equals a video of another
    built-in synthetic config, whose test accuracy may have guided a protocol choice."""
    from autovid.config import load_config
    from autovid.data.synthetic import clip_digests
    from autovid.resources import list_resources

    def digests(name: str) -> set[str]:
        cfg = load_config(name)
        return set(clip_digests(**cfg.data.synthetic.model_dump()).values())

    claims = digests("ablation")
    others = [n for n in list_resources("tune_configs")
              if n != "ablation" and load_config(n).data.dataset == "synthetic"]
    assert "quickstart" in others
    for name in others:
        assert not claims & digests(name), name
    assert len(claims) == 6 * 70  # and no two of its own videos are equal either
