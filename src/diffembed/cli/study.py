"""``diffembed reproduce``: run the diffusion-vs-AR study, or rewrite its report.

The study itself is :mod:`diffembed.study` (design, stages, analysis, report).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from diffembed.cli.options import at_least
from diffembed.errors import ConfigError, InputNotFoundError
from diffembed.io import check_output_dir, check_output_file, check_writable
from diffembed.model.model_dir import is_model_dir
from diffembed.study.design import ROW_GROUPS, ROWS, select_rows
from diffembed.study.pack import write_archive, write_pack
from diffembed.study.presets import PRESETS
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
        "--rows",
        help="comma-separated rows or groups of rows (default: the preset's; rows: "
        f"{','.join(r.name for r in ROWS)}; groups: {','.join(ROW_GROUPS)})",
    )
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--report-only", action="store_true", help="only rewrite the report")
    p.add_argument(
        "--export-best",
        type=Path,
        metavar="DIR",
        help="copy the best diffusion embedding model of the run to DIR, with a model card",
    )
    p.add_argument(
        "--jobs",
        type=at_least(1),
        help="run this many independent stages at once, one process each (default: the "
        "preset's; the gpu-short preset runs 6 on one GPU)",
    )
    p.add_argument(
        "--write-pack",
        type=Path,
        metavar="FILE",
        help="build the data stages here and write them with the tokenized pretraining "
        "documents the rows need to FILE (one .tar.gz), then stop",
    )
    p.add_argument(
        "--pack",
        type=Path,
        metavar="FILE",
        help="start from a pack written by --write-pack for the same preset (no corpus needed)",
    )
    p.add_argument(
        "--archive",
        type=Path,
        metavar="DIR",
        help="also write DIR/results.tar.gz (the results without weights) and, with "
        "--export-best, DIR/model.tar.gz: at most 16 MiB each",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run_reproduce)


def _check_outputs(args: argparse.Namespace, out: Path) -> None:
    """Before any stage runs: every output of the command can be written, and
    ``--export-best`` would not delete a folder that is not a model directory of ours."""
    check_writable(out, into=True)
    if args.write_pack is not None:
        check_output_file(args.write_pack, "choose another --write-pack")
    if args.archive is not None:
        check_writable(args.archive, "choose another --archive", into=True)
    if args.export_best is not None:
        check_output_dir(
            args.export_best,
            False,
            replaceable=is_model_dir,
            overwrite_hint="empty it",
            elsewhere="choose another --export-best",
        )


def run_reproduce(args: argparse.Namespace) -> int:
    """Run ``diffembed reproduce``: the stages (or only the report), then print the report."""
    preset = PRESETS[args.preset]
    if args.seeds:
        preset = dataclasses.replace(preset, seeds=tuple(int(s) for s in args.seeds.split(",")))
    rows = select_rows(args.rows.split(",") if args.rows else preset.rows)
    if args.pack is not None and (args.corpus is not None or args.write_pack is not None):
        raise ConfigError("--pack replaces the corpus: not with --corpus or --write-pack")
    if args.pack is not None and not args.pack.is_file():
        raise InputNotFoundError(f"--pack {args.pack}: no such file")
    _check_outputs(args, args.out or Path("results") / preset.name)
    study = Study(
        preset=preset,
        out=args.out or Path("results") / preset.name,
        corpus=args.corpus,
        device=args.device,
        show_progress=not args.no_progress,
        command=["diffembed", *sys.argv[1:]],
        pack=args.pack,
        jobs=args.jobs or preset.jobs,
    )
    if args.write_pack is not None:
        manifest = write_pack(study, rows, args.write_pack)
        print(f"wrote {args.write_pack}: {json.dumps(manifest['tokens'])}")
        return 0
    if args.report_only:
        study.load_stage_times()
        path = write_report(study, rows)
    else:
        path = study.run(rows)
    if args.export_best:
        export_best(study, args.export_best, rows)
    if args.archive:
        for file in write_archive(study, args.archive, args.export_best):
            print(f"wrote {file} ({file.stat().st_size / 2**20:.1f} MiB)")
    print(path.read_text())
    return 0
