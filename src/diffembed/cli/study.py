"""``diffembed reproduce``: run the diffusion-vs-AR study, or rewrite its report.

The study itself is :mod:`diffembed.study` (design, stages, analysis, report).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from diffembed.study.design import PRESETS, ROWS, select_rows
from diffembed.study.report import export_best, write_report
from diffembed.study.stages import Study


def add_reproduce_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``diffembed reproduce``."""
    p = sub.add_parser(
        "reproduce",
        help="run the diffusion-vs-AR study end to end and write a report",
        description="Pretrain a diffusion and an AR LM identically except the objective, "
        "fine-tune every row of the design contrastively with several seeds, evaluate on the "
        "four suites with BM25 and MiniLM as references, and write OUT/report.md. Resumable: "
        "finished stages whose inputs are unchanged are skipped.",
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--out", type=Path, help="output folder (default: results/<preset>)")
    p.add_argument("--corpus", type=Path, help="use this corpus directory instead of building one")
    p.add_argument("--seeds", help="comma-separated fine-tuning seeds (default: the preset's)")
    p.add_argument(
        "--rows", help=f"comma-separated rows (default: all: {','.join(r.name for r in ROWS)})"
    )
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--report-only", action="store_true", help="only rewrite the report")
    p.add_argument(
        "--export-best",
        type=Path,
        metavar="DIR",
        help="copy the best diffusion embedding model of the run to DIR, with a model card",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run_reproduce)


def run_reproduce(args: argparse.Namespace) -> int:
    """Run ``diffembed reproduce``: the stages (or only the report), then print the report."""
    preset = PRESETS[args.preset]
    if args.seeds:
        preset = dataclasses.replace(preset, seeds=tuple(int(s) for s in args.seeds.split(",")))
    rows = select_rows(args.rows.split(",") if args.rows else preset.rows)
    study = Study(
        preset=preset,
        out=args.out or Path("results") / preset.name,
        corpus=args.corpus,
        device=args.device,
        show_progress=not args.no_progress,
        command=["diffembed", *sys.argv[1:]],
    )
    if args.report_only:
        study.load_stage_times()
        path = write_report(study, rows)
    else:
        path = study.run(rows)
    if args.export_best:
        export_best(study, args.export_best, rows)
    print(path.read_text())
    return 0
