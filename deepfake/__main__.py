"""Command line: ``python -m deepfake <command>``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .core import lifetime, paths


def _cmd_synth(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .data.synth import config_dict, generate
    from .pipeline.params import load_params

    params = load_params(args.params)  # every section validated: a faulty params.yaml stops here
    out = paths.resolve(args.out)
    if out.exists() and args.if_missing:
        print(f"{out} exists; leaving it as it is")
        return 0
    if args.if_missing and paths.resolve(params.data.raw_dir) != out:
        # the pipeline reads another dataset (a real one): the embedded one is not needed
        print(f"data.raw_dir in {args.params} is {params.data.raw_dir}, not {out}: nothing to render")
        return 0
    changes = {
        k: getattr(args, k)
        for k in ("n_identities", "images_per_identity", "image_size", "seed", "workers")
        if getattr(args, k) is not None
    }
    cfg = replace(params.synth, **changes)
    try:
        generate(out, cfg, overwrite=args.overwrite)
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    n = 2 * cfg.n_identities * cfg.images_per_identity
    print(f"wrote {n} images ({cfg.n_identities} identities) to {out} with {config_dict(cfg)}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from .pipeline.params import load_params, write_check_record

    params = load_params(args.params, preset=args.preset)
    with_preset = f" with preset {args.preset}" if args.preset else ""
    print(f"{params.file}: every section valid{with_preset} ({', '.join(params.SECTIONS)})")
    if args.record:
        write_check_record(params, paths.resolve(args.record))
    return 0


def _cmd_inventory(args: argparse.Namespace) -> int:
    from .data.ingest import DatasetLayoutError
    from .pipeline.inventory import run_inventory
    from .pipeline.params import load_params

    params = load_params(args.params)  # every section validated: a faulty params.yaml stops here
    try:
        inv = run_inventory(params, args.cross or "", progress=not args.no_progress)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    except DatasetLayoutError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    n = inv.counts()
    print(
        f"{paths.shown(inv.file)}: {n['images']} image(s), {n['videos']} video(s), {n['left_out']} path(s) left out "
        f"({'written' if inv.written else 'unchanged'})"
    )
    return 0


def _cmd_preprocess(args: argparse.Namespace) -> int:
    from .data.ingest import DatasetLayoutError
    from .data.layouts import LayoutConfig
    from .data.preprocess import SHARDS_DIR, Shard, ShardsIncomplete, preprocess
    from .pipeline.params import load_params

    changes = {k: v for k, v in (("shard", args.shard), ("workers", args.workers)) if v is not None}
    if args.merge is not None:
        if args.merge < 1:
            print(f"error: --merge {args.merge}: the number of shards is at least 1", file=sys.stderr)
            return 2
        changes["shard"] = ""  # the merge runs no shard, whatever params.yaml says
    params = load_params(args.params, {"preprocess": changes})  # every section validated; --shard as the setting
    cfg = params.preprocess
    where = paths.layout(params.data.raw_dir, params.data.faces_dir)
    try:
        # a scheduler ending the job (scancel, a time limit, a deleted pod) sends SIGTERM first: what
        # was finished is recorded before the exit, and the next run of the same shard goes on from it
        with lifetime.sigterm_exits("recording what this run finished"):
            result = preprocess(
                where.raw,
                where.faces,
                cfg,
                progress=not args.no_progress,
                layout=LayoutConfig.of(params.data),
                merge_shards=args.merge or 0,
            )
    except (ShardsIncomplete, DatasetLayoutError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    s = result.summary
    done = f"{s['processed_now']} decoded now, {s['reused']} reused"
    shard = Shard.parse(cfg.shard)
    if shard is not None:
        print(
            f"shard {shard}: {s['images']} image(s) and {s['videos']} video(s) of its share ({done}), {s['written']} "
            f"crop(s); recorded in {paths.shown(where.faces / SHARDS_DIR / shard.file_name)}. Once all {shard.count} "
            f"have finished: python -m deepfake preprocess --merge {shard.count}"
        )
    else:
        merged = f"{s['merged_shards']} shards merged, " if s["merged_shards"] else ""
        print(
            f"{paths.shown(where.faces / 'manifest.csv')}: {s['written']} crop(s) of {s['images']} image(s) and "
            f"{s['videos']} video(s), {s['skipped']} input(s) skipped ({merged}{done})"
        )
    return 0


def _cmd_preset(args: argparse.Namespace) -> int:
    from .pipeline.params import PRESETS_FILE, load_params, preset_flags, preset_names, preset_overrides

    if not args.name:
        for name in preset_names():
            t = preset_overrides(name)["train"]
            print(
                f"{name:<16} {t['arch']} at {t['image_size']} px, {t['optimizer']} lr {t['lr']:g} "
                f"({t['schedule']}), {t['epochs']} epochs"
            )
        print(f"(their values: {PRESETS_FILE}; python -m deepfake preset NAME prints one's)")
        return 0
    load_params(args.params, preset=args.name)  # valid with this params file, or a ConfigError naming why
    flags = preset_flags(args.name)
    print(f"preset {args.name}:")
    for flag in flags:
        print(f"  {flag}")
    print("as a DVC experiment (preprocess, then every stage after it, with these values):")
    print(f"  dvc exp run -n {args.name} " + " ".join(f"-S {flag}" for flag in flags))
    return 0


def _cmd_stage(args: argparse.Namespace) -> int:
    import yaml
    from papermill.exceptions import PapermillExecutionError

    from .pipeline.runner import run_stage, stage_of

    # -p values are YAML, as papermill's command line reads them ("False", "3", "a name")
    parameters = {k: yaml.safe_load(v) if v.strip() else v for k, v in args.parameter}
    try:
        run_stage(args.notebook, args.output, parameters)
    except PapermillExecutionError as e:
        print(f"error: stage {stage_of(args.notebook)} failed: {e.ename}: {e.evalue}", file=sys.stderr)
        print(f"  the executed notebook shows the failing cell and its traceback: {args.output}", file=sys.stderr)
        return 1
    return 0


def _cmd_experiments(args: argparse.Namespace) -> int:
    import pandas as pd

    from .pipeline.explore import experiments_table

    table = experiments_table()
    if table.empty:
        if table.attrs.get("failed"):  # DVC missing, not a DVC repository, or DVC failed
            print(f"error: {table.attrs['message']}", file=sys.stderr)
            return 1
        print(table.attrs.get("message", "no experiments"))  # no experiment yet: how to run one
        return 0
    shown = table.drop(columns=[c for c in ("kind", "rev", "baseline", "created") if c in table.columns])
    with pd.option_context("display.width", 200, "display.max_columns", None, "display.float_format", "{:.4g}".format):
        print(shown.to_string(index=False, na_rep=""))  # a queued experiment has no metrics yet
    print(table.attrs.get("message", ""))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .core.config import override_pairs
    from .pipeline.params import load_params
    from .pipeline.stages import run_train

    params = load_params(args.params, override_pairs([f"train.{item}" for item in args.set]), preset=args.preset)
    where = paths.layout(params.data.raw_dir, params.data.faces_dir)
    result = run_train(
        params.train,
        _user_path(args.faces_dir) if args.faces_dir else where.faces,
        _user_path(args.splits_dir) if args.splits_dir else where.splits,
        _user_path(args.model_dir) if args.model_dir else where.models,
        _user_path(args.reports_dir) if args.reports_dir else where.train_reports,
    )
    if result.is_main:
        s = result.summary
        print(
            f"best epoch {s['best_epoch']}: val auc {s['best_val_auc']:.4f} ({s['world_size']} process(es), "
            f"{s['device']}); "
            f"checkpoints in {result.best_checkpoint.parent}"
        )
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .core.config import override_pairs
    from .pipeline.compare import CompareConfig, compare_detectors
    from .pipeline.params import load_params

    params = load_params(args.params, override_pairs(args.set))
    try:
        cfg = CompareConfig(tuple(args.arch), args.epochs, args.image_size, not args.no_int8, args.robustness)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    faces = _user_path(args.faces_dir) if args.faces_dir else None
    splits = _user_path(args.splits_dir) if args.splits_dir else None
    try:
        compare_detectors(params, cfg, _user_path(args.out), _user_path(args.models_dir), faces, splits)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print((paths.resolve(args.out) / "table.md").read_text(), end="")
    return 0


def _user_path(arg: str) -> Path:
    """A path given on the command line: from the working directory when it exists there, else from the
    project root (absolute either way: library code takes relative paths from the project root)."""
    return Path(arg).absolute() if Path(arg).exists() else paths.resolve(arg)


def _cmd_predict(args: argparse.Namespace) -> int:
    from .inference.cli_output import predictions_csv, predictions_table
    from .inference.predict import PredictConfig, find_inputs, get_predictor

    missing = [p for p in args.paths if not Path(p).exists()]
    for p in missing:
        print(f"error: {p} does not exist", file=sys.stderr)
    found = find_inputs([p for p in args.paths if Path(p).exists()])
    files = found.files
    if found.ignored:
        print(f"note: {found.ignored_note()}", file=sys.stderr)
    if not files and not missing and not found.problems:
        print(f"error: no images or videos found in {' '.join(args.paths)}", file=sys.stderr)
        return 1
    try:
        cfg = PredictConfig(
            face=args.face,
            backend=args.backend,
            batch_size=args.batch_size,
            video_frames=args.frames,
            calibration_file=str(_user_path(args.calibration)) if args.calibration else "",
            int8_calibration=tuple(args.int8_calibration or ()),
            **({} if args.int8_max_change is None else {"int8_max_change": args.int8_max_change}),
        )
        predictor = get_predictor(_user_path(args.checkpoint), args.device, cfg)
    except (ValueError, FileNotFoundError) as e:  # checkpoint (CheckpointError), calibration file, settings
        print(f"error: cannot load the model: {e}", file=sys.stderr)  # it names the file, the fault and the fix
        return 2
    except Exception as e:  # anything else: its type says more than nothing
        print(f"error: cannot load the model: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    show_bar = not args.no_progress and (len(files) > 1 or any(Path(p).is_dir() for p in args.paths))
    results = predictor.predict_many(files, on_error="collect", progress=show_bar)
    results = found.merge(results)  # a row for every path found, in order
    errors = [r for r in results if getattr(r, "error", None)]
    for r in errors:
        print(f"error: {r.error}", file=sys.stderr)
    if args.json:
        import json

        print(json.dumps([r.to_dict() for r in results], indent=2))
    elif args.csv:
        sys.stdout.write(predictions_csv(results))
    else:
        print(predictions_table(results, predictor.calibration.threshold))
    return 1 if errors or missing else 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .inference.cli_output import health

    info, ok = health(
        _user_path(args.checkpoint), args.device, _user_path(args.calibration) if args.calibration else ""
    )
    if args.json:
        import json

        print(json.dumps(info, indent=2, default=str))
    else:
        width = max(len(k) for k in info)
        for k, v in info.items():
            print(f"{k:<{width}}  {v}")
    return 0 if ok else 1


def _cmd_remote(args: argparse.Namespace) -> int:
    from .pipeline.remote import RemoteError, add_remote, transfer

    try:
        if args.action == "add":
            if not args.targets or len(args.targets) > 1:
                usage = "s3://BUCKET/PATH, ssh://USER@HOST/PATH or a folder"
                print(f"error: remote add takes one URL: {usage}", file=sys.stderr)
                return 2
            return add_remote(args.targets[0], args.endpoint)
        if args.endpoint:
            print(f"error: --endpoint is a setting of remote add, not of remote {args.action}", file=sys.stderr)
            return 2
        return transfer(args.action, args.targets, args.jobs)
    except RemoteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deepfake", description="Deepfake detection toolkit.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="render the embedded synthetic face-forgery dataset")
    p.add_argument(
        "--out", default=str(paths.RAW_DIR.relative_to(paths.ROOT)), help="output folder (default: data/raw)"
    )
    p.add_argument(
        "--params", default=str(paths.PARAMS_FILE), help="params file whose 'synth' section is used (validated whole)"
    )
    p.add_argument("--n-identities", type=int, dest="n_identities")
    p.add_argument("--images-per-identity", type=int, dest="images_per_identity")
    p.add_argument("--image-size", type=int, dest="image_size")
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, help="rendering processes (0: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    p.add_argument("--if-missing", action="store_true", help="do nothing when the folder exists")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser(
        "check-params", help="validate every section of params.yaml (unknown keys, types, ranges) and exit"
    )
    p.add_argument("--params", default=str(paths.PARAMS_FILE))
    p.add_argument(
        "--record",
        metavar="PATH",
        help="on success, write this file (dvc.yaml's check_params stage: every stage depends on it); "
        "its content names the sections, never their values",
    )
    p.add_argument("--preset", help="validate with a preset's values applied (python -m deepfake preset lists them)")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser(
        "inventory",
        help="list the dataset (data.raw_dir) as the preprocess stage reads it, each file with its size and "
        "SHA-256 and every path left out with its reason, into reports/inventory/inventory.csv (rewritten only "
        "when it changes; only new or changed files are read); dvc.yaml's stages depend on it, not on the folder",
    )
    p.add_argument("--params", default=str(paths.PARAMS_FILE), help="params file (validated whole)")
    p.add_argument(
        "--cross",
        metavar="NAME",
        help="the cross-dataset test set NAME of cross_dataset instead (reports/inventory/cross_NAME.csv)",
    )
    p.add_argument("--no-progress", action="store_true", dest="no_progress", help="no progress bar")
    p.set_defaults(func=_cmd_inventory)

    p = sub.add_parser(
        "preprocess",
        help="build the face cache (data.faces_dir) as the preprocess stage does, without its reports; or one "
        "shard of it (--shard K/N: several processes or machines share the work), or the merge of the shards",
    )
    p.add_argument("--params", default=str(paths.PARAMS_FILE), help="params file (validated whole)")
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--shard",
        metavar="K/N",
        help="only share K (1 to N) of N, by a hash of each input's path; writes its crops and "
        "shards/K-of-N.json, never manifest.csv (default: preprocess.shard)",
    )
    how.add_argument(
        "--merge",
        type=int,
        metavar="N",
        help="merge shards 1/N to N/N into manifest.csv, refusing (exit 1, naming them) while any has not "
        "finished for these settings and inputs (a plain run merges too when it finds shards' records)",
    )
    p.add_argument("--workers", type=int, help="processes (0: all cores; default: preprocess.workers)")
    p.add_argument("--no-progress", action="store_true", dest="no_progress", help="no progress bar")
    p.set_defaults(func=_cmd_preprocess)

    p = sub.add_parser(
        "preset",
        help="the field's baseline detectors as params blocks (xception, efficientnet_b4, resnet18): list them, "
        "or print one's values and its dvc exp run -S command",
    )
    p.add_argument("name", nargs="?", help="a preset; none: list them")
    p.add_argument("--params", default=str(paths.PARAMS_FILE), help="params file the preset is validated with")
    p.set_defaults(func=_cmd_preset)

    p = sub.add_parser(
        "stage",
        help="run a pipeline stage's notebook as papermill does (dvc.yaml's commands): the package's messages "
        "and progress on stderr, the executed notebook without run times",
    )
    p.add_argument("notebook", help="e.g. notebooks/02_train.ipynb")
    p.add_argument("output", help="the executed notebook, e.g. reports/notebooks/02_train.ipynb")
    p.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a notebook parameter (a YAML value), e.g. -p params_file params.yaml -p quick False",
    )
    p.set_defaults(func=_cmd_stage)

    p = sub.add_parser(
        "experiments",
        help="DVC experiments side by side, queued, running, finished and failed (dvc exp show, dvc queue status): "
        "the state, the params that differ and the headline metrics, short column names",
    )
    p.set_defaults(func=_cmd_experiments)

    p = sub.add_parser(
        "train", help="train a detector with params.yaml's train section (also under torchrun --nproc_per_node=N)"
    )
    p.add_argument(
        "--params",
        default=str(paths.PARAMS_FILE),
        help="params file whose 'base' and 'train' sections are used (validated whole)",
    )
    p.add_argument("--faces-dir", help="dataset the split manifests point into (default: data.faces_dir)")
    p.add_argument("--splits-dir", help="folder with train.csv and val.csv (default: reports/split)")
    p.add_argument("--model-dir", help="where best.pt and last.pt are written (default: models)")
    p.add_argument("--reports-dir", help="where history.csv and metrics.json are written (default: reports/train)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a train key (YAML value), e.g. --set epochs=3",
    )
    p.add_argument(
        "--preset",
        help="a preset's train values first (--set overrides them); its preprocess.size needs the face cache "
        "made at that size (python -m deepfake preset NAME)",
    )
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "compare",
        help="train several detectors on the split stage's split, evaluate each as the evaluate stage does, and "
        "write one table and figure (reports/compare/table.md)",
    )
    p.add_argument(
        "--arch",
        nargs="+",
        required=True,
        metavar="ARCH",
        help="the detectors: resnet18, dilated_cnn or timm model names, e.g. resnet18 dilated_cnn efficientnet_b0",
    )
    p.add_argument("--epochs", type=int, help="epochs for every detector (default: train.epochs)")
    p.add_argument("--image-size", type=int, dest="image_size", help="network input (default: train.image_size)")
    p.add_argument("--params", default=str(paths.PARAMS_FILE), help="params file (validated whole)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a params override for every detector (YAML value), e.g. --set train.lr=3e-4 --set evaluate.bootstrap=200",
    )
    p.add_argument("--out", default="reports/compare", help="the table, figure and each detector's reports")
    p.add_argument("--models-dir", default="build/compare", dest="models_dir", help="each detector's checkpoints")
    p.add_argument("--faces-dir", dest="faces_dir", help="face cache (default: data.faces_dir)")
    p.add_argument("--splits-dir", dest="splits_dir", help="train/val/test.csv (default: reports/split)")
    p.add_argument("--no-int8", action="store_true", dest="no_int8", help="do not time the int8 runtime")
    p.add_argument(
        "--robustness", action="store_true", help="also re-score under the evaluate section's robustness levels"
    )
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("predict", help="score images, videos and folders with a trained model")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image or video files, or folders of them")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON (one object per input, frames for videos)")
    fmt.add_argument("--csv", action="store_true", help="print CSV (one row per input)")
    p.add_argument("--checkpoint", default="models/best.pt", help="trained checkpoint (default: models/best.pt)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument(
        "--face",
        default="checkpoint",
        choices=("checkpoint", "detect", "none"),
        help="checkpoint: crop as the model's training data was cropped (recorded in the checkpoint); "
        "detect / none: force face detection on or off (scores then differ from the pipeline's)",
    )
    p.add_argument(
        "--calibration",
        default="reports/eval/calibration.json",
        help="temperature and threshold JSON, used when present",
    )
    p.add_argument(
        "--backend",
        default="eager",
        choices=("eager", "jit", "int8"),
        help="model runtime (int8 needs --int8-calibration)",
    )
    p.add_argument(
        "--int8-calibration", nargs="+", dest="int8_calibration", metavar="PATH", help="images to calibrate int8 on"
    )
    p.add_argument(
        "--int8-max-change",
        type=float,
        dest="int8_max_change",
        metavar="P",
        help="run the exact model instead of int8 when int8 moves a calibration image's probability by more "
        "than P (default: PredictConfig's, docs/inference.md; 1: never)",
    )
    p.add_argument("--batch-size", type=int, default=32, dest="batch_size")
    p.add_argument(
        "--frames", type=int, default=None, help="frames sampled per video (default: as many as training sampled)"
    )
    p.add_argument("--no-progress", action="store_true", dest="no_progress", help="no progress bar")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser(
        "remote",
        help="the shared DVC remote (docs/remote.md): add one, push or pull the face cache and the models, or "
        "compare with it; DVC's own output, and on failure one line naming the setting to check",
    )
    p.add_argument(
        "action",
        choices=("add", "push", "pull", "status"),
        help="add URL: make it the default remote 'shared'; push / pull: dvc push / dvc pull; "
        "status: dvc status --cloud",
    )
    p.add_argument(
        "targets",
        nargs="*",
        metavar="ARG",
        help="add: the URL (s3://BUCKET/PATH, ssh://USER@HOST/PATH or a folder); push / pull / status: DVC "
        "targets (default: every cached output: cache/faces, models)",
    )
    p.add_argument("--endpoint", help="add: the S3 API's endpointurl (MinIO, Ceph: http://HOST:PORT); none for AWS")
    p.add_argument("-j", "--jobs", type=int, help="push / pull / status: parallel transfers (DVC's default without)")
    p.set_defaults(func=_cmd_remote)

    p = sub.add_parser(
        "info", help="versions, device, and whether a trained model is present and loads (exit 1 if not)"
    )
    p.add_argument("--checkpoint", default="models/best.pt")
    p.add_argument("--device", default="auto")
    p.add_argument("--calibration", default="reports/eval/calibration.json")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    import logging

    from .core.config import ConfigError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
