"""`autovid` command line: the only module that parses arguments; it decides what the user sees."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from autovid import __version__
from autovid.config import SyntheticConfig
from autovid.data.backends import DECODERS
from autovid.errors import RunFailed, UserError, printable

if TYPE_CHECKING:  # Ray and torch load only when a command needs them
    from autovid.tune.runner import TuneOutcome

log = logging.getLogger("autovid")


STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")  # a dotted config override, key.sub=value
# an input of the command is never replaced, even with --overwrite (autovid.files.check_output)
OVERWRITE_HELP = "replace an existing OUT, atomically (a symbolic link at OUT is replaced, not the file it points to)"


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a tune_configs/ name (e.g. quickstart) or a YAML path")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted config overrides")


def _cluster_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        default=None,
        help="Ray cluster address (auto | ray://host:port); default: local Ray or RAY_ADDRESS",
    )
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite:///mlflow.db here)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted experiment of the same name")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autovid", description="Search, tune, train and compare video action-recognition networks."
    )
    parser.add_argument("--version", action="version", version=f"autovid {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="datasets: synthesize, index, summarize").add_subparsers(
        dest="data_command", required=True
    )
    synth = data.add_parser("synth", help="write the embedded synthetic motion benchmark (UCF101 layout)")
    synth.add_argument("out", type=Path)
    synthetic = SyntheticConfig()  # the one definition of the benchmark's defaults (also `data.synthetic.*`)
    synth.add_argument("--classes", type=int, default=synthetic.classes)
    synth.add_argument("--videos-per-class", type=int, default=synthetic.videos_per_class)
    synth.add_argument("--groups", type=int, default=synthetic.groups)
    synth.add_argument("--test-groups", type=int, default=synthetic.test_groups)
    synth.add_argument("--speed", type=float, default=synthetic.speed, help="scales every motion; lower is harder")
    synth.add_argument("--polarity", choices=("bright", "mixed"), default=synthetic.polarity,
                       help="actor brighter than the scene (default), or a random contrast sign per channel")
    synth.add_argument("--size", type=int, default=synthetic.size)
    synth.add_argument("--frames", type=int, default=synthetic.frames)
    synth.add_argument("--seed", type=int, default=synthetic.seed)
    synth.add_argument("--codec", choices=("mpeg4", "h264", "mjpeg"), default=synthetic.codec)
    index = data.add_parser("index", help="index a dataset into a Parquet manifest (probing every file once)")
    index.add_argument("root", type=Path)
    index.add_argument("--format", required=True, choices=("ucf101", "hmdb51", "folder", "csv"))
    index.add_argument("--split", type=int, default=1)
    index.add_argument(
        "--splits", type=Path, default=None, help="folder with the split files (default: found in/beside ROOT)"
    )
    index.add_argument("--out", type=Path, required=True)
    index.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    index.add_argument("--workers", type=int, default=None)
    index.add_argument("--decoder", default="auto", choices=DECODERS,
                       help="the backend that probes the videos (data.decoder; default: auto)")
    summary = data.add_parser("summary", help="summarize a manifest")
    summary.add_argument("manifest", type=Path)

    def experiment(name: str, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text)
        _config_args(command)
        _cluster_args(command)
        return command

    experiment("search", "one DARTS search (a single Tune trial), then print the genotype")
    tune_p = experiment("tune", "an Optuna study over the NAS hyperparameters, then retrain the best")
    tune_p.add_argument("--no-retrain", action="store_true",
                        help="skip the retrain after the study (as tune.retrain=none)")
    train = experiment("train", "retrain a genotype (or a registered network) from scratch and evaluate it")
    train.add_argument("--genotype", type=Path, default=None, help="genotype.json (omit with train.model=<name>)")
    for command in (tune_p, train):
        command.add_argument("--register", metavar="NAME", default=None,
                             help="register the retrained network in the MLflow Model Registry as NAME "
                                  "(a new version each time)")
    evaluate = sub.add_parser("evaluate", help="re-evaluate a trained network checkpoint (multi-clip)")
    evaluate.add_argument("checkpoint", type=Path, help="state.pt of a retrain (printed by `autovid train`)")
    evaluate.add_argument("--clips", type=int, default=None, help="test clips per video (default: as trained)")
    export = sub.add_parser(
        "export", help="export a retrained network as a .pt2 or ONNX model that runs without autovid"
    )
    export.add_argument("state", type=Path, help="state.pt of a retrain (printed by `autovid train`)")
    export.add_argument("--format", required=True, choices=("pt2", "onnx"))
    export.add_argument("--out", type=Path, default=None, help="output file (default: STATE with the format's suffix)")
    export.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP + "; also OUT.json")
    predict = sub.add_parser("predict", help="top-k classes of video files (TSN multi-clip, as at test time)")
    predict.add_argument("model", help="a retrain's state.pt, an exported .pt2 / .onnx, or an MLflow model URI "
                                       "(runs:/<run>/<name>, models:/<id>, models:/<name>/<version>)")
    predict.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (any size, frame rate, container)")
    predict.add_argument("--clips", type=int, default=None, help="clips per video, evenly spaced (default: as trained)")
    predict.add_argument("--topk", type=int, default=5, help="classes shown per video (default 5)")
    predict.add_argument("--out", type=Path, default=None, help="also write the predictions to this CSV file")
    predict.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    predict.add_argument("--tracking-uri", default=None, help="MLflow store of a runs:/ or models:/ MODEL "
                                                              "(default: MLFLOW_TRACKING_URI, else mlflow.db here)")
    experiment("ablate", "run ablation arms (DARTS, random, random-WS, fixed networks) and report")
    experiment("rank", "does weight sharing rank architectures right? (Kendall tau, Spearman rho)")
    versus = experiment(
        "vs-random", "did the search beat chance? the searched genotype vs random ones, retrained alike"
    )
    versus.add_argument("--genotype", type=Path, default=None,
                        help="a searched genotype.json to retrain under every seed (default: run the config's search "
                             "once per seed)")
    versus.add_argument("--samples", type=int, default=8, help="uniform random genotypes of the same space (default 8)")
    versus.add_argument("--seeds", type=int, default=2,
                        help="seeds (seed, seed+1, ...): each retrains every genotype and, without --genotype, "
                             "runs its own search (default 2)")
    null = experiment("null", "the search beside its null: the same search on shuffled labels, seed by seed")
    null.add_argument("--seeds", type=int, default=3, help="seeds (seed, seed+1, ...), each searched twice (default 3)")
    segments = experiment("segments", "TSN segments vs one dense clip, K in --segments, same architecture")
    segments.add_argument("--genotype", type=Path, default=None, help="genotype.json (omit with train.model=<name>)")
    segments.add_argument("--segments", default="1,2,4,8", help="comma-separated segment counts (default 1,2,4,8)")
    segments.add_argument("--seeds", type=int, default=2,
                          help="seeds per setting (seed, seed+1, ...); 2+ for a seed-level test (default 2)")
    models = sub.add_parser("models", help="list registered networks with params and FLOPs per clip")
    models.add_argument("--num-classes", type=int, default=101)
    models.add_argument(
        "--input", default="16x112x112", help="frames x height x width of one clip (default 16x112x112)"
    )
    ui = sub.add_parser("ui", help="start the MLflow UI (or, with --optuna, optuna-dashboard) on 127.0.0.1")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=None, help="default 5000 (MLflow) or 8080 (--optuna)")
    ui.add_argument("--tracking-uri", default=None)
    ui.add_argument("--optuna", metavar="EXPERIMENT", default=None,
                    help="optuna-dashboard on EXPERIMENT's study: a name under --storage-path, or its folder")
    ui.add_argument("--storage-path", type=Path, default=Path("autovid_runs"),
                    help="where experiments live (the config's storage_path; default autovid_runs)")
    return parser


# ----------------------------------------------------------------------------------------------- data
def cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == "synth":
        from autovid.data.synthetic import synthesize

        started = time.perf_counter()
        root = synthesize(
            args.out,
            classes=args.classes,
            videos_per_class=args.videos_per_class,
            groups=args.groups,
            test_groups=args.test_groups,
            speed=args.speed,
            polarity=args.polarity,
            size=args.size,
            frames=args.frames,
            seed=args.seed,
            codec=args.codec,
        )
        print(f"wrote the synthetic benchmark to {root} in {time.perf_counter() - started:.1f}s")
        return 0
    from autovid.data.manifest import build_manifest, read_manifest, summarize_manifest, write_manifest

    if args.data_command == "index":
        from autovid.data.manifest import check_manifest_destination, list_videos
        from autovid.files import check_output

        # before probing, which takes hours on a real dataset: a bad --out must not surface only at the end, and
        # no --out may replace what is indexed (the dataset's tree, its split files, a listed video)
        trees = [p for p in (args.root, args.splits) if p is not None and p.is_dir()]
        check_output(args.out, [args.root], trees=trees, overwrite=args.overwrite)
        check_manifest_destination(args.out, what="--out")
        listing = list_videos(args.root, args.format, split=args.split, splits_dir=args.splits)  # opens no video
        check_output(args.out, [*listing.sources, *(entry.path for entry in listing.entries)], overwrite=args.overwrite)
        frame = build_manifest(args.root, args.format, split=args.split, splits_dir=args.splits, workers=args.workers,
                               progress=True, listing=listing, decoder=args.decoder)
        summary = summarize_manifest(frame)
        if summary["ok"] == 0:
            _print_summary(summary)
            raise UserError(f"no usable video under {args.root}: every file was quarantined (manifest not written)")
        write_manifest(frame, args.out)
        _print_summary(summary)
        print(f"manifest: {args.out}")
        return 0
    if not args.manifest.is_file():
        raise UserError(f"manifest not found: {args.manifest}")
    _print_summary(summarize_manifest(read_manifest(args.manifest)))
    return 0


def _print_summary(summary: dict[str, Any]) -> None:
    from autovid.data.manifest import format_summary

    print(format_summary(summary))


# ------------------------------------------------------------------------------------- search / tune
def _load(args: argparse.Namespace):
    from autovid.config import load_config

    return load_config(args.config, args.overrides)


def cmd_tune(args: argparse.Namespace) -> int:
    cfg = _load(args)  # validate before importing Ray and torch: a config error answers at once
    from autovid.data.manifest import format_summary, summarize_manifest
    from autovid.engine.setup import prepare_manifest
    from autovid.tune.runner import run_search_experiment

    print(f"dataset ({cfg.data.dataset}):\n{format_summary(summarize_manifest(prepare_manifest(cfg.data)))}")
    if args.command == "search":  # one search, no outer hyperparameter sampling
        cfg = cfg.with_overrides({"tune.num_samples": 1, "tune.param_space": {}, "tune.scheduler.name": "none",
                                  "tune.points_to_evaluate": [], "tune.objectives": [], "tune.retrain": "none"},
                                 source="search")
    outcome = run_search_experiment(
        cfg, resume=args.resume, retrain=not getattr(args, "no_retrain", args.command == "search"),
        address=args.address, tracking_uri=args.tracking_uri, register=getattr(args, "register", None),
    )
    _print_outcome(outcome)
    return 0 if outcome.best_genotype else 1


def _print_outcome(outcome: TuneOutcome) -> None:
    """What a study found: the trials, the best genotype and its α, the Pareto front and its retrain, the best
    one's retrain, and where the results and the MLflow run are."""
    from autovid.report import summary_table

    if not outcome.summary.empty:
        columns = [c for c in outcome.summary.columns if c not in ("genotype",)]
        print(summary_table(outcome.summary.to_dict("records"), columns))
    # the best trial's row: with tune.constraints the first (highest objective) row may be infeasible
    best_row = next((r for r in outcome.summary.to_dict("records") if r.get("trial") == outcome.best_trial_id), {})
    if outcome.best_genotype:
        _print_genotype(outcome.best_genotype, best_row)
    if outcome.best_alphas:
        _print_alphas(outcome.best_alphas, best_row)
    _print_front(outcome)
    if outcome.retrain:
        shown = {k: v for k, v in outcome.retrain.items() if k != "test/correct"}  # per-video hits: too long
        print("retrained best genotype: "
              + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()))
    print(f"results: {outcome.experiment_path}")
    if outcome.parent_run_id:
        print(f"MLflow: parent run {outcome.parent_run_id}; open the UI with `autovid ui` (http://127.0.0.1:5000)")
    else:
        print("MLflow: the tracking store was unavailable; its events wait in the experiment folder's "
              "mlflow_spool.jsonl and are replayed by the next --resume")


def _print_front(outcome: TuneOutcome) -> None:
    from autovid.report import summary_table

    if outcome.pareto is not None:
        front = [c for c in outcome.pareto.columns if c not in ("genotype", "status")]
        print(f"Pareto front ({len(outcome.pareto)} of {len(outcome.summary)} trials; pareto.csv, pareto.png):")
        print(summary_table(outcome.pareto.to_dict("records"), front))
    if outcome.pareto_retrained is not None:
        print("retrained Pareto front, test accuracy against cost (pareto_retrained.csv):")
        print(summary_table(outcome.pareto_retrained.to_dict("records"), list(outcome.pareto_retrained.columns)))


def _print_genotype(genotype_json: str, row: dict[str, Any]) -> None:
    from autovid.nas.genotype import Genotype

    genotype = Genotype.from_json(genotype_json)
    print(f"best genotype {genotype.hash}:\n{genotype}")
    params, flops = row.get("genotype/params"), row.get("genotype/flops")
    if params is not None and flops is not None:
        print(f"  derived network: {int(params):,} params, {int(flops) / 1e6:,.1f} MFLOPs per clip")


def _print_alphas(alphas_json: str, row: dict[str, Any]) -> None:
    import math

    from autovid.report import top_operators

    edges = top_operators(alphas_json, k=2)
    n_ops = len(json.loads(alphas_json)["ops"])
    entropy = row.get("alpha/entropy")
    if entropy is not None and not math.isnan(float(entropy)):
        print(f"final α entropy {float(entropy):.3f} nats per edge (uniform: ln {n_ops} = {math.log(n_ops):.3f}, "
              f"ratio {float(entropy) / math.log(n_ops):.3f})")
    print("top two operators per edge, softmax(α):")
    for cell, edge, ranked in edges:
        print(f"  {cell} edge {edge}: " + ", ".join(f"{op} {w:.3f}" for op, w in ranked))


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _load(args)
    genotype_json = _genotype_arg(args.genotype, cfg)
    from autovid.tune.runner import run_retrain

    final = run_retrain(
        cfg,
        genotype_json,
        name=f"{cfg.name}-train",
        resume=args.resume,
        tracking_uri=args.tracking_uri,
        address=args.address,
        register=args.register,
    )
    print(
        "  ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in final.items() if k != "test/correct"
        )
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    if not args.checkpoint.exists():
        raise UserError(f"checkpoint not found: {args.checkpoint}")
    from autovid.engine.evaluation import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, test_clips=args.clips)
    print(json.dumps({k: v for k, v in result.items() if k not in ("test/confusion", "test/correct")}, indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from autovid.export import PARITY_TOLERANCE, export_model

    result = export_model(args.state, args.format, args.out, overwrite=args.overwrite)
    print(f"exported {result.path} ({args.format}, dynamic batch) in {result.seconds:.1f}s; metadata: {result.sidecar}")
    print(f"parity with eager PyTorch on {result.parity_clips} real test clips of {result.parity_video}: "
          f"max |Δlogit| = {result.max_abs_diff:.2g} (tolerance {PARITY_TOLERANCE:g})")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    if args.topk < 1:
        raise UserError(f"--topk {args.topk}: give at least 1")
    if args.clips is not None and args.clips < 1:
        raise UserError(f"--clips {args.clips}: give at least 1")
    from autovid.export import check_destination
    from autovid.files import check_output
    from autovid.predict import MLFLOW_SCHEMES, load_predictor, predict_videos
    from autovid.report import summary_table

    if args.out is not None:  # before loading anything: the CSV may replace neither the model nor a video
        path = Path(args.model)
        model = [] if args.model.startswith(MLFLOW_SCHEMES) else [path, path / "state.pt"] if path.is_dir() else [path]
        check_output(args.out, [*model, *args.videos], overwrite=args.overwrite)
        check_destination(args.out)
    predictor = load_predictor(args.model, tracking_uri=args.tracking_uri)
    clips = args.clips or int(predictor.spec.get("test_clips", 1))

    def unreadable(video: str, reason: str) -> None:
        print(f"autovid: cannot read {video}: {reason}", file=sys.stderr, flush=True)

    run = predict_videos(predictor, args.videos, clips=clips, topk=args.topk, on_failure=unreadable)
    if run.predictions:
        print(summary_table(run.rows(), ["video", "rank", "class", "probability"]))
    if args.out is not None and not run.predictions:  # a run that produced nothing never replaces a result
        print(f"predictions: none (no video could be read); {args.out} not written")
    elif args.out is not None:
        from autovid.files import write_csv_atomic

        write_csv_atomic(run.frame(), args.out)
        print(f"predictions: {args.out}")
    print(f"predicted {len(run.predictions)} of {len(args.videos)} videos ({run.clips} clips, {clips} per video) in "
          f"{run.seconds:.2f}s: {run.clips_per_s:.1f} clips/s, decoding included ({predictor.source} model)")
    return 1 if run.failures else 0


def cmd_ablate(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from autovid.tune.ablation import run_ablation

    out = run_ablation(cfg, resume=args.resume, address=args.address, tracking_uri=args.tracking_uri)
    print(out["markdown"].read_text())
    print(f"report: {out['markdown'].parent}")
    return 0


def cmd_rank(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from autovid.tune.ablation import run_rank_check

    result = run_rank_check(cfg, resume=args.resume, address=args.address, tracking_uri=args.tracking_uri)
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_vs_random(args: argparse.Namespace) -> int:
    cfg = _load(args)
    # without --genotype the config's own search runs once per seed
    genotype_json = _genotype_arg(args.genotype, cfg) if args.genotype is not None else None
    from autovid.tune.ablation import run_versus_random

    result = run_versus_random(cfg, genotype_json, samples=args.samples, seeds=args.seeds, resume=args.resume,
                               address=args.address, tracking_uri=args.tracking_uri)
    print(Path(result["report"]).read_text(), end="")
    print(f"table: {result['table']}\nreport: {result['report']}")
    return 0


def cmd_null(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from autovid.tune.ablation import run_null_control

    result = run_null_control(cfg, seeds=args.seeds, resume=args.resume, address=args.address,
                              tracking_uri=args.tracking_uri)
    print(Path(result["report"]).read_text(), end="")
    print(f"table: {result['table']}\nreport: {result['report']}")
    return 0


def cmd_segments(args: argparse.Namespace) -> int:
    cfg = _load(args)
    try:
        segments = [int(x) for x in args.segments.split(",")]
    except ValueError:
        raise UserError(f"--segments {args.segments!r} is not a comma-separated list of integers") from None
    genotype_json = _genotype_arg(args.genotype, cfg)
    from autovid.tune.ablation import run_segments_sweep

    out = run_segments_sweep(cfg, genotype_json, segments=segments, seeds=args.seeds, resume=args.resume,
                             address=args.address, tracking_uri=args.tracking_uri)
    from autovid.report import provenance_line

    print(provenance_line(out["provenance"]))
    print(out["table"].to_string(index=False))
    print("segments - dense, across seeds (Welch, Holm over K):")
    print(out["comparisons"].to_string(index=False))
    print(f"table: {out['csv']}\ncomparisons: {out['comparisons_csv']}\nplot: {out['plot']}")
    return 0


def _genotype_arg(path: Path | None, cfg: Any) -> str | None:
    if path is not None:
        if not path.is_file():
            raise UserError(f"genotype file not found: {path}")
        from autovid.nas.genotype import Genotype

        return Genotype.load(path).to_json()
    if cfg.train.model is None:
        raise UserError("give --genotype FILE, or train.model=<name> for a registered network (see `autovid models`)")
    return None


def cmd_models(args: argparse.Namespace) -> int:
    try:
        frames, height, width = (int(x) for x in args.input.lower().split("x"))
    except ValueError:
        raise UserError(f"--input {args.input!r} is not FRAMESxHEIGHTxWIDTH (e.g. 16x112x112)") from None
    if min(frames, height, width) < 1 or args.num_classes < 1:
        raise UserError(f"--input {args.input!r} and --num-classes {args.num_classes} must be positive")
    from autovid.engine.accounting import count_flops, count_parameters
    from autovid.models import create_model, list_models, model_kwargs
    from autovid.report import summary_table

    rows = []
    for name in list_models():
        extra = {k: v for k, v in {"frames": frames, "input_size": height}.items() if k in model_kwargs(name)}
        model = create_model(name, num_classes=args.num_classes, **extra)
        rows.append({
            "model": name,
            "params": count_parameters(model),
            "GFLOPs/clip": count_flops(model, (1, 1, 3, frames, height, width)) / 1e9,
        })
    print(summary_table(rows, ["model", "params", "GFLOPs/clip"]))
    return 0


def ui_port(args: argparse.Namespace) -> int:
    """`--port`, or the server's default (5000 for MLflow, 8080 for optuna-dashboard); 1-65535, else a UserError."""
    default = 8080 if args.optuna is not None else 5000
    port = default if args.port is None else args.port
    if not 1 <= port <= 65535:  # 0 would not pick a free port: the server would take its own default
        raise UserError(f"--port {port}: give a port from 1 to 65535 (default {default})")
    return port


def ui_invocation(args: argparse.Namespace) -> tuple[list[str], str]:
    """The argv `autovid ui` runs and the line it prints first (the MLflow UI, or optuna-dashboard)."""
    port = ui_port(args)
    if args.optuna is not None:
        from autovid.tune.study import check_journal, dashboard_command, find_journal

        journal = find_journal(args.optuna, args.storage_path)
        check_journal(journal)  # here, in one line: the dashboard would die on it with a traceback
        return (dashboard_command(journal, host=args.host, port=port),
                f"optuna-dashboard at http://{args.host}:{port} (study {journal}); Ctrl-C stops it")
    from autovid import tracking

    uri = args.tracking_uri or tracking.default_tracking_uri()
    return tracking.ui_command(
        uri, host=args.host, port=port
    ), f"MLflow UI at http://{args.host}:{port} (store {uri}); Ctrl-C stops it"


def cmd_ui(args: argparse.Namespace) -> int:
    command, banner = ui_invocation(args)
    print(banner, flush=True)
    return run_server(command)


SERVER_STOP_GRACE_S = 10.0  # how long a server's processes get to exit on a passed-on signal before SIGKILL
SERVER_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run_server(command: list[str], *, grace_s: float = SERVER_STOP_GRACE_S) -> int:
    """Run a server until it exits or this process gets SIGINT, SIGTERM or SIGHUP, and leave none of its processes.

    The server runs in a process group of its own (`start_new_session`), and a signal to autovid is passed on to
    that whole group: `mlflow ui` starts uvicorn (or gunicorn) workers that a signal to its first process alone
    would orphan, still holding the port. Whatever of the group outlives the server's exit is sent SIGTERM, then
    SIGKILL after `grace_s`. Returns the server's exit code, or 128 + the signal that stopped it (130 for Ctrl-C).
    """
    received: list[int] = []
    proc: subprocess.Popen | None = None

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        if proc is not None:
            _signal_group(proc.pid, signum)

    previous = {signum: signal.signal(signum, forward) for signum in SERVER_SIGNALS}
    try:
        proc = subprocess.Popen(command, start_new_session=True)
        if received:  # a signal came while the server was being started
            _signal_group(proc.pid, received[0])
        code = proc.wait()
    finally:
        try:
            if proc is not None:
                _end_group(proc, grace_s)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    return 128 + received[0] if received else code


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:  # the group is empty: nothing left to stop
        pass


def _group_alive(proc: subprocess.Popen) -> bool:
    proc.poll()  # reap the leader if it ended: a zombie still counts as a member of its group
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    return True


def _end_group(proc: subprocess.Popen, grace_s: float) -> None:
    """Stop what is left of `proc`'s process group (SIGTERM, then SIGKILL after `grace_s`) and wait until it is empty
    (at most `grace_s` plus 5 s)."""
    for signum, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        if not _group_alive(proc):
            return
        _signal_group(proc.pid, signum)
        deadline = time.monotonic() + wait_s
        while _group_alive(proc) and time.monotonic() < deadline:
            time.sleep(0.05)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "export": cmd_export,
    "predict": cmd_predict,
    "vs-random": cmd_vs_random,
    "data": cmd_data,
    "search": cmd_tune,
    "tune": cmd_tune,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "ablate": cmd_ablate,
    "rank": cmd_rank,
    "null": cmd_null,
    "segments": cmd_segments,
    "models": cmd_models,
    "ui": cmd_ui,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Dotted overrides may also follow options (`train CONFIG --genotype G.json train.epochs=1`): argparse
    # stops filling a positional list at the first option, so collect the k=v words it left over.
    args, extra = parser.parse_known_args(argv)
    stray = [word for word in extra if not (hasattr(args, "overrides") and OVERRIDE.match(word))]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return COMMANDS[args.command](args)
    except UserError as err:  # one line: a name from the data (a file name with a newline) cannot add another
        print(f"autovid: error: {printable(str(err))}", file=sys.stderr)
        return 2
    except RunFailed as err:
        print(f"autovid: error: {printable(str(err))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(interrupted_line(args), file=sys.stderr)
        return 130
    except OSError as err:
        if err.errno not in STORAGE_ERRNOS:
            raise
        # the machine, not the input: one line, and what was written so far stays resumable
        rerun = "rerun with --resume" if hasattr(args, "resume") else "run it again"
        print(f"autovid: error: {err.strerror}: {printable(str(err.filename or ''))} (free space or fix the storage, "
              f"then {rerun})", file=sys.stderr)
        return 1


def interrupted_line(args: argparse.Namespace) -> str:
    """What an interrupted command prints: `--resume` is advised only to the commands that have it (not export,
    predict, evaluate, data, models or ui)."""
    return "autovid: interrupted (resume with --resume)" if hasattr(args, "resume") else "autovid: interrupted"


if __name__ == "__main__":
    sys.exit(main())
