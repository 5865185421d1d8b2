"""Config loading: validation errors are one line naming the key and file; overrides; immutability."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

from autovid.config import ExperimentConfig, load_config, parse_overrides
from autovid.errors import UserError
from autovid.resources import list_resources


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_every_builtin_config_validates() -> None:
    names = list_resources("tune_configs")
    assert "quickstart" in names
    for name in names:
        assert isinstance(load_config(name), ExperimentConfig)


def test_dotted_overrides_apply_and_parse_types(tmp_path: Path) -> None:
    cfg = load_config(
        _write(tmp_path, "name: x\n"), ["data.num_segments=8", "search.w_lr=1e-2", "data.resize=[64, 80]"]
    )
    assert cfg.data.num_segments == 8
    assert cfg.search.w_lr == pytest.approx(0.01)
    assert cfg.data.resize == (64, 80)


@pytest.mark.parametrize(
    ("text", "overrides", "expected"),
    [
        ("data:\n  num_segmnets: 3\n", [], "data.num_segmnets: unknown key"),
        ("data:\n  num_segments: four\n", [], "data.num_segments"),
        ("search:\n  train_portion: 1.5\n", [], "search.train_portion"),
        ("name: x\n", ["search.epochz=2"], "unknown config key 'search.epochz'"),
        ("name: x\n", ["data.num_segments=0"], "data.num_segments"),
        ("data:\n  modality: flow\n", [], "data.modality"),
        ("data:\n  crop_scale: [0.9, 0.5]\n", [], "crop_scale must be (low, high)"),
        ("data:\n  crop_scale: [0, 1]\n", [], "data.crop_scale"),
        ("tune:\n  param_space:\n    data.nope: {type: choice, values: [1]}\n", [], "data.nope"),
        # a trial never holds devices it does not use
        ("name: x\n", ["tune.resources.gpu=2"], "set tune.resources.workers=2 and gpu=1"),
        ("name: x\n", ["tune.resources.gpu=0.5", "tune.resources.workers=2"], "need a whole GPU each"),
    ],
)
def test_bad_input_is_one_line_naming_key_and_file(
    tmp_path: Path, text: str, overrides: list[str], expected: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(UserError) as err:
        load_config(path, overrides)
    message = str(err.value)
    assert expected in message and str(path) in message
    assert "\n" not in message


def test_unknown_builtin_name_lists_valid_names() -> None:
    with pytest.raises(UserError, match="quickstart"):
        load_config("no-such-config")


def test_config_is_immutable_and_flat_roundtrips(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "seed: 3\n"))
    with pytest.raises(pydantic.ValidationError):
        cfg.seed = 4  # type: ignore[misc]
    flat = cfg.flat()
    assert flat["seed"] == 3 and flat["data.num_segments"] == cfg.data.num_segments
    assert cfg.with_overrides({"seed": 5}).seed == 5 and cfg.seed == 3


def test_parse_overrides_rejects_malformed() -> None:
    with pytest.raises(UserError, match="key.sub=value"):
        parse_overrides(["justakey"])


def test_a_trial_larger_than_this_machine_is_refused() -> None:
    from autovid.engine.preflight import check_trial_fits

    cfg = load_config("quickstart", ["tune.resources.workers=2", "tune.resources.cpu=2"])
    check_trial_fits(cfg, cpus=4, gpus=0)
    with pytest.raises(UserError, match=r"needs 4 CPUs \(workers=2 × cpu=2\) but this machine has 2"):
        check_trial_fits(cfg, cpus=2, gpus=0)
    gpu = load_config("quickstart", ["tune.resources.workers=4", "tune.resources.gpu=1"])
    with pytest.raises(UserError, match="needs 4 GPUs"):
        check_trial_fits(gpu, cpus=64, gpus=2)


# ------------------------------------------------------------------------------------ bounded config loading

def _bomb(indent: str) -> str:
    """A "billion laughs": 9 levels of 9 aliases, a few hundred bytes that expand to 9**9 strings."""
    levels = [f"{indent}- &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"{indent}- &{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip("abcdefg", "bcdefgh")]
    levels.append(f"{indent}- [{', '.join(['*h'] * 9)}]")
    return "\n".join(levels)


BOMB_CONFIG = "tune:\n  param_space:\n    train.lr:\n      type: choice\n      values:\n" + _bomb("        ") + "\n"
BOMB_OVERRIDE = ("tune.param_space={train.lr: {type: choice, values: ["
                 + ", ".join(line.strip().removeprefix("- ") for line in _bomb("").splitlines()) + "]}}")

_LIMITED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # 1 GiB: the bomb needs tens
from autovid.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _autovid_in_1gib(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _LIMITED, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_an_alias_bomb_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    """`_check_param_space` dumped the config, expanding every alias: gigabytes, then an abort under the limit."""
    (tmp_path / "bomb.yaml").write_text(BOMB_CONFIG)
    assert len(BOMB_CONFIG) < 600
    for args in (("bomb.yaml",), ("quickstart", BOMB_OVERRIDE)):
        result = _autovid_in_1gib("search", *args, cwd=tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
        assert lines[0].startswith("autovid: error:") and "100,000 values" in lines[0] and "aliases" in lines[0]


def test_aliases_within_the_limits_still_load(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "name: shared\ntune:\n  param_space:\n    train.lr: &lr {type: choice, "
                                       "values: [0.1, 0.2]}\n    search.w_lr: *lr\n"
                                       "train: &t {epochs: 3}\nsearch:\n  <<: *t\n"))
    assert cfg.tune.param_space["search.w_lr"] == cfg.tune.param_space["train.lr"]
    assert cfg.search.epochs == cfg.train.epochs == 3


@pytest.mark.parametrize(("text", "needle"), [
    ("a: " + "[" * 10_000 + "]" * 10_000 + "\n", "nested deeper than 32 levels"),
    ("".join(" " * i + f"k{i}:\n" for i in range(100)), "nested deeper than 32 levels"),
    ("a: &a [*a]\n", "nested deeper than 32 levels through its aliases"),  # a recursive alias
    ("\n".join(["- &a0 [1]"] + [f"- &a{i} [*a{i - 1}]" for i in range(1, 60)]), "through its aliases"),
    ("name: x\n" + "# padding\n" * 120_000, "larger than 1024 KiB"),
    ("seed: " + "1" * 5000 + "\n", "a value YAML cannot represent"),
])
def test_files_that_would_hang_or_crash_the_loader_are_one_line(tmp_path: Path, text: str, needle: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(UserError) as err:
        load_config(path)
    assert needle in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_overrides_are_bounded_like_files() -> None:
    for override, needle in ((f"tune.param_space={'[' * 5000}{']' * 5000}", "nested deeper than 32 levels"),
                             ("name=" + "x" * (70 << 10), "longer than 64 KiB")):
        with pytest.raises(UserError, match=needle) as err:
            load_config("quickstart", [override])
        assert len(str(err.value)) < 300


@pytest.mark.parametrize(("content", "needle"), [
    (bytes(range(256)) * 4, "a binary file"),
    ("name: caf\u00e9\n".encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset 9)"),
    (b"", "the config is empty"),
    (b"# only a comment\n\n", "the config is empty"),
    (b"{}\n", "the config is empty"),
])
def test_binary_undecodable_and_empty_files_exit_2_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture, content: bytes, needle: str) -> None:
    """An empty file used to start the whole default experiment; a binary one raised UnicodeDecodeError."""
    from autovid.cli import main

    path = tmp_path / "exp.yaml"
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        load_config(path)
    assert needle in str(err.value) and "\n" not in str(err.value)
    if not content.isascii():  # through the command line too (not an empty one: were it accepted, a search runs)
        code = main(["search", str(path)])
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and lines == [f"autovid: error: {err.value}"], lines


def test_validation_errors_are_capped(tmp_path: Path) -> None:
    path = _write(tmp_path, "".join(f"unknown_key_{i}_{'x' * 300}: 1\n" for i in range(3000)))
    with pytest.raises(UserError) as err:
        load_config(path)
    message = str(err.value)
    assert "unknown_key_0_" in message and "unknown_key_4_" in message and "unknown_key_5_" not in message
    assert message.endswith("; and 2,995 more problems") and len(message) < 1500


def test_search_spaces_and_arms_share_the_bounded_reader(tmp_path: Path) -> None:
    from autovid.config import load_arm
    from autovid.nas.search_space import load_search_space

    for kind in ("search_spaces", "baselines"):  # the built-in files (no anchors) all load
        for name in list_resources(kind):
            (load_search_space if kind == "search_spaces" else load_arm)(name)
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("name: b\nops:\n" + _bomb("  ") + "\n")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\0\1\2")
    for load in (load_search_space, load_arm):
        with pytest.raises(UserError, match="100,000 values"):
            load(bomb)
        with pytest.raises(UserError, match="binary file"):
            load(binary)


# -- issue 21, item 5: a boolean is not a number, and the name limit is said --------------------------------------
@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("tune.resources.workers=true", "tune.resources.workers"),  # was accepted as 1
        ("data.num_workers=false", "data.num_workers"),  # was accepted as 0
        ("seed=true", "seed"),
        ("data.resize=[true, 32]", "data.resize.0"),
        ("train.lr=true", "train.lr"),  # a float field: was accepted as 1.0
    ],
)
def test_a_boolean_is_refused_where_a_number_is_expected(override: str, key: str) -> None:
    with pytest.raises(UserError) as err:
        load_config("quickstart", [override])
    message = str(err.value)
    assert f"{key}: " in message and "boolean" in message and "\n" not in message, message


def test_numbers_still_load_from_yaml_and_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\ntune:\n  resources:\n    workers: 2\n    cpu: 1\ndata:\n  resize: [32, 40]\n")
    cfg = load_config(path, ["data.num_workers=0", "seed=3", "train.lr=1"])
    assert cfg.tune.resources.workers == 2 and type(cfg.tune.resources.workers) is int
    assert cfg.data.resize == (32, 40) and cfg.data.num_workers == 0 and cfg.seed == 3
    assert cfg.train.lr == 1.0 and type(cfg.train.lr) is float
    assert cfg.search.stop_on_collapse is False  # true booleans stay booleans
    assert load_config(path, ["search.stop_on_collapse=true"]).search.stop_on_collapse is True


def test_a_name_over_the_limit_says_the_limit() -> None:
    from autovid.config import MAX_NAME_CHARS
    from autovid.tune.runner import check_registered_name

    assert load_config("quickstart", [f"name={'n' * MAX_NAME_CHARS}"]).name == "n" * MAX_NAME_CHARS
    with pytest.raises(UserError) as err:
        load_config("quickstart", [f"name={'n' * (MAX_NAME_CHARS + 1)}"])
    message = str(err.value)
    assert f"at most {MAX_NAME_CHARS} characters" in message and f"{MAX_NAME_CHARS + 1}" in message, message
    with pytest.raises(UserError, match=f"--register .* at most {MAX_NAME_CHARS} characters"):
        check_registered_name("m" * 300)
    with pytest.raises(UserError, match="not a plain name"):  # the other rule keeps its message
        load_config("quickstart", ["name=../x"])
