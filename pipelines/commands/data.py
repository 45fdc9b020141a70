"""``robocar data``: data for the pipeline; ``synth`` writes a synthetic donkeycar tub v2 for the demo
(``--classifier``: labelled photos and a Ground Truth manifest for the classifier recipe; ``--detection``:
photos with objects at known boxes and a Ground Truth bounding-box manifest for the detection recipe)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("data", help="driving data: synthesise a donkeycar tub for the demo")
    commands = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    synth = commands.add_parser(
        "synth",
        help="write a synthetic donkeycar tub v2 (simulated track, learnable steering labels)",
        description="Write a donkeycar 5.x tub v2 (manifest.json, catalogs, images/) of camera frames "
        "rendered from a simulated closed track. The steering label is pure pursuit on the car's pose "
        "relative to the road, so a model can learn it from the picture. Deterministic for --seed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    synth.add_argument("--out", type=Path, required=True, help="tub folder to create (must be new or empty)")
    synth.add_argument("--frames", type=int, default=5000, help="number of frames (records)")
    synth.add_argument(
        "--sessions", type=int, default=4, help="driving sessions (lighting, direction, start)"
    )
    synth.add_argument("--seed", type=int, default=0, help="seed of track, drive, looks and noise")
    synth.add_argument(
        "--classifier",
        action="store_true",
        help="write labelled photos of --classes shapes and a Ground Truth image-classification output "
        "manifest (OUT/output.manifest) instead of a tub",
    )
    synth.add_argument(
        "--detection",
        action="store_true",
        help="write photos with 1-4 objects of --classes shapes at known boxes and a Ground Truth "
        "bounding-box output manifest (OUT/output.manifest) instead of a tub",
    )
    synth.add_argument(
        "--classes",
        type=int,
        default=3,
        help="with --classifier: number of classes (2..8); with --detection: (1..6)",
    )
    synth.add_argument(
        "--images", type=int, default=600, help="with --classifier or --detection: number of photos"
    )
    synth.add_argument(
        "--unlabelled",
        action="store_true",
        help="with --classifier or --detection: photos only, for robocar label predict (OUT/images); "
        "their labels kept apart as the truth in OUT/truth/output.manifest",
    )
    synth.set_defaults(handler=_synth)


def _synth(args: argparse.Namespace) -> int:
    if args.classifier and args.detection:
        raise ValueError("choose one of --classifier and --detection")
    if args.unlabelled and not (args.classifier or args.detection):
        raise ValueError("--unlabelled goes with --classifier or --detection")
    if args.classifier:
        return _synth_classes(args)
    if args.detection:
        return _synth_boxes(args)
    from pipelines.synth import write_tub

    if args.frames < 1 or args.sessions < 1 or args.sessions > args.frames:
        raise ValueError("need --frames >= --sessions >= 1")
    started = time.perf_counter()
    last = [started]

    def progress(done: int, total: int) -> None:
        if time.perf_counter() - last[0] > 2.0 or done == total:
            print(f"  {done}/{total} frames", file=sys.stderr, flush=True)
            last[0] = time.perf_counter()

    summary = write_tub(args.out, args.frames, args.sessions, args.seed, progress=progress)
    seconds = time.perf_counter() - started
    print(
        f"wrote tub {args.out}: {summary['frames']} frames in {len(summary['sessions'])} sessions "
        f"(angle mean {summary['angle_mean']:+.3f}, std {summary['angle_std']:.3f}) in {seconds:.1f} s"
    )
    return 0


def _synth_classes(args: argparse.Namespace) -> int:
    from pipelines.synth_classes import write_classes

    started = time.perf_counter()
    summary = write_classes(args.out, args.classes, args.images, args.seed, unlabelled=args.unlabelled)
    counts = ", ".join(f"{n} {c}" for n, c in zip(summary.per_class, summary.classes, strict=True))
    what, truth = ("unlabelled", "their truth ") if args.unlabelled else ("labelled", "")
    print(
        f"wrote {summary.images} {what} photos ({counts}; {summary.grey} greyscale) and "
        f"{truth}{summary.manifest} in {time.perf_counter() - started:.1f} s"
    )
    return 0


def _synth_boxes(args: argparse.Namespace) -> int:
    from pipelines.synth_boxes import write_boxes

    started = time.perf_counter()
    summary = write_boxes(args.out, args.classes, args.images, args.seed, unlabelled=args.unlabelled)
    counts = ", ".join(f"{n} {c}" for n, c in zip(summary.objects_per_class, summary.classes, strict=True))
    what, truth = ("unlabelled ", "their truth ") if args.unlabelled else ("", "")
    print(
        f"wrote {summary.images} {what}photos with {sum(summary.objects_per_class)} objects ({counts}; "
        f"{summary.grey} greyscale) and {truth}{summary.manifest} in {time.perf_counter() - started:.1f} s"
    )
    return 0
