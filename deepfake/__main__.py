"""Command line: ``python -m deepfake <command>``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import paths


def _cmd_synth(args: argparse.Namespace) -> int:
    from .pipeline import load_params, make_config
    from .synth import SynthConfig, config_dict, generate

    out = paths.resolve(args.out)
    if out.exists() and args.if_missing:
        print(f"{out} exists; leaving it as it is")
        return 0
    section = dict(load_params(args.params).get("synth", {})) if args.params else {}
    for key in ("n_identities", "images_per_identity", "image_size", "seed", "workers"):
        if getattr(args, key) is not None:
            section[key] = getattr(args, key)
    if "jpeg_quality" in section:
        section["jpeg_quality"] = tuple(section["jpeg_quality"])
    if "manipulations" in section:
        section["manipulations"] = tuple(section["manipulations"])
    cfg = make_config(SynthConfig, section)
    try:
        generate(out, cfg, overwrite=args.overwrite)
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    n = 2 * cfg.n_identities * cfg.images_per_identity
    print(f"wrote {n} images ({cfg.n_identities} identities) to {out} with {config_dict(cfg)}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import yaml

    from .pipeline import load_params, make_config, run_train
    from .train import TrainConfig

    params = load_params(args.params)
    base = params.get("base", {})
    values = {"seed": base.get("seed", 0), "device": base.get("device", "auto"), **params.get("train", {})}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"error: --set expects key=value, got {item!r}", file=sys.stderr)
            return 2
        values[key] = yaml.safe_load(value)
    cfg = make_config(TrainConfig, values)
    result = run_train(cfg, args.raw_dir, args.splits_dir, args.model_dir, args.reports_dir)
    if result.is_main:
        s = result.summary
        print(f"best epoch {s['best_epoch']}: val auc {s['best_val_auc']:.4f} ({s['world_size']} process(es), {s['device']}); "
              f"checkpoints in {result.best_checkpoint.parent}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deepfake", description="Deepfake detection toolkit.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="render the embedded synthetic face-forgery dataset")
    p.add_argument("--out", default=str(paths.RAW_DIR.relative_to(paths.ROOT)), help="output folder (default: data/raw)")
    p.add_argument("--params", default=str(paths.PARAMS_FILE), help="params.yaml whose 'synth' section is used ('' for built-in defaults)")
    p.add_argument("--n-identities", type=int, dest="n_identities")
    p.add_argument("--images-per-identity", type=int, dest="images_per_identity")
    p.add_argument("--image-size", type=int, dest="image_size")
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, help="rendering processes (0: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    p.add_argument("--if-missing", action="store_true", help="do nothing when the folder exists")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("train", help="train a detector with params.yaml's train section (also under torchrun --nproc_per_node=N)")
    p.add_argument("--params", default=str(paths.PARAMS_FILE), help="params.yaml whose 'base' and 'train' sections are used")
    p.add_argument("--raw-dir", default="data/raw", help="dataset folder the split manifests point into")
    p.add_argument("--splits-dir", default="reports/split", help="folder with train.csv and val.csv")
    p.add_argument("--model-dir", default="models", help="where best.pt and last.pt are written")
    p.add_argument("--reports-dir", default="reports/train", help="where history.csv and metrics.json are written")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a train key (YAML value), e.g. --set epochs=3")
    p.set_defaults(func=_cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
