"""The study run (``diffembed reproduce``): resumable stages from corpus to evaluation.

A controlled rerun of the paper's comparison: the same tokenizer, architecture, data order, token
budget and optimizer for a masked-diffusion LM and an AR LM; then the same contrastive
fine-tuning for every row of the design (:mod:`diffembed.study.design`); then the same
evaluation on four suites; then the report (:mod:`diffembed.study.report`).

Every stage writes a marker ``OUT/stages/<stage>.json`` holding a digest of its key; a rerun
skips a stage whose marker matches and whose outputs exist, so an interrupted study continues
where it stopped and a changed setting reruns only what depends on it. Heavy outputs (corpus,
tasks, model weights) stay in ``OUT`` but are git-ignored there; logs, results, figures and
``report.md`` are meant to be committed.

Stage keys. A stage's key holds what it computes from: its settings (from the preset), the
digests of the stages it reads (inputs) and, for the data builders (``tasks``, ``pairs``), the
digest of their code (:func:`code_digest`). The code digest starts from the function objects the
stage calls (``build_all``, ``build_pairs``), never from module names: it covers the source file
of each function (``inspect.getsourcefile``) and, transitively, every file of the same package
room (``diffembed/<room>/``, e.g. ``data/``) that those files import, function-local imports
included. Each file counts by its content only (neither its name nor its path), so moving or
renaming a module keeps the key, and changing any line the builder can run changes it. Files
outside the room (``io``, ``formats``, ``model``...) are shared infrastructure and do not count.
Training and evaluation stages are keyed on their configs and inputs, not on code, so that an
edit of the trainer does not silently rerun hours of training; delete their markers to force it.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import inspect
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffembed.errors import InputNotFoundError
from diffembed.io import atomic_write, write_json
from diffembed.provenance import file_sha256, provenance
from diffembed.study import lms
from diffembed.study.design import LM, SUITE_ORDER, Row, lms_needed, select_rows
from diffembed.study.heldout import HELDOUT_PAIRS
from diffembed.study.jobs import run_calls
from diffembed.study.presets import StudyPreset
from diffembed.study.report import write_report

logger = logging.getLogger(__name__)

# Heavy or rebuildable outputs that stay out of version control inside OUT.
GITIGNORE = """# written by diffembed reproduce: heavy or rebuildable outputs (logs/ keeps their logs)
/corpus/
/tokenizer/
/tasks/
/lm/
/ft/
/pairs/
*.tasks/
/pretrain-tokens.npz
"""


# ================================================================================ keys
def digest(obj: Any) -> str:
    """sha256 of a JSON-able object (sorted keys): the identity of a stage's inputs."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _module_file(root: Path, parts: Sequence[str]) -> Path | None:
    """The source file of module ``parts`` (below the top package's parent ``root``)."""
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_files(path: Path, root: Path) -> set[Path]:
    """The files of the top package (the one ``path`` belongs to) that ``path`` imports anywhere
    in its body: ``from M import name`` counts ``M.name`` when it is a module, else ``M``."""
    rel = path.relative_to(root).with_suffix("").parts
    package, top = rel[:-1], rel[0]
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[tuple[str, ...]] = []
        if isinstance(node, ast.Import):
            targets = [tuple(a.name.split(".")) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = (*base, *(node.module.split(".") if node.module else ()))
            targets = [(*module, a.name) for a in node.names]
            targets = [t if _module_file(root, t) else module for t in targets]
        for parts in targets:
            if parts and parts[0] == top:
                file = _module_file(root, parts)
                if file is not None:
                    found.add(file.resolve())
    return found


def code_files(*functions: Callable[..., Any]) -> list[Path]:
    """The source files a code digest of ``functions`` covers (see the module docstring)."""
    files: set[Path] = set()
    for fn in functions:
        source = inspect.getsourcefile(fn)
        if source is None:
            raise ValueError(f"{fn!r}: no source file")
        entry = Path(source).resolve()
        top = Path(sys.modules[fn.__module__.split(".")[0]].__file__ or entry).resolve().parent
        rel = entry.relative_to(top).parts
        room = top / rel[0] if len(rel) > 1 else entry
        todo = [entry]
        while todo:
            path = todo.pop()
            if path in files:
                continue
            files.add(path)
            todo += [p for p in _imported_files(path, top.parent) if p == room or room in p.parents]
    return sorted(files)


def code_digest(*functions: Callable[..., Any]) -> str:
    """sha256 of the contents of :func:`code_files` (order- and name-independent), so that a
    stage whose data builder changed is rebuilt even when its parameters did not."""
    h = hashlib.sha256()
    for content in sorted(file_sha256(p) for p in code_files(*functions)):
        h.update(content.encode())
    return h.hexdigest()


# ================================================================================ the study
@dataclass(frozen=True)
class StudyData:
    """The data stages' outputs and digests: the corpus (a directory, or a tokenized pretrain
    split when the study starts from a pack), tokenizer, tasks and pairs."""

    corpus: Path
    corpus_d: str
    tok: Path
    tok_d: str
    tasks: Path
    tasks_d: str
    pairs: Path
    pairs_d: str


@dataclass
class Study:
    """One study run: its preset, output folder and stage bookkeeping."""

    preset: StudyPreset
    out: Path
    corpus: Path | None = None
    device: str | None = None
    show_progress: bool = True
    command: list[str] = field(default_factory=list)
    stage_times: dict[str, float] = field(default_factory=dict)
    pack: Path | None = None  # start from this pack (``--pack``) instead of building the data
    jobs: int = 1  # independent stages run in this many processes at once
    adapt_steps: int | None = None  # M as measured by the adaptation curve (None: not yet)

    # ------------------------------------------------------------------ bookkeeping
    def marker(self, name: str) -> Path:
        """The marker file of stage ``name``."""
        return self.out / "stages" / f"{name.replace('/', '__')}.json"

    def stage(
        self, name: str, key: dict[str, Any], outputs: Sequence[Path], run: Callable[[], None]
    ) -> str:
        """Run ``run`` unless a marker with the same key digest exists and ``outputs`` exist.

        Returns the stage digest (which downstream stages put in their keys).
        """
        d = digest(key)
        marker = self.marker(name)
        if marker.exists():
            try:
                saved = json.loads(marker.read_text())
            except json.JSONDecodeError:
                saved = {}
            if saved.get("digest") == d and all(p.exists() for p in outputs):
                logger.info("stage %s: up to date, skipped", name)
                self.stage_times[name] = float(saved.get("wall_time_s", 0.0))
                return d
        logger.info("stage %s: running", name)
        start = time.time()
        run()
        missing = [str(p) for p in outputs if not p.exists()]
        if missing:
            raise RuntimeError(f"stage {name} finished without writing {missing}")
        record = {"stage": name, "digest": d, "key": key, **provenance(start, self.command)}
        write_json(marker, record)
        self.stage_times[name] = record["wall_time_s"]
        logger.info("stage %s: done in %.1f s", name, record["wall_time_s"])
        return d

    def load_stage_times(self) -> None:
        """Read the wall times of the finished stages from their markers (for the report)."""
        for marker in (self.out / "stages").glob("*.json"):
            data = json.loads(marker.read_text())
            self.stage_times[data["stage"]] = data.get("wall_time_s", 0.0)

    # ------------------------------------------------------------------ data
    def stage_corpus(self) -> tuple[Path, str]:
        """The corpus: ``--corpus`` when given, else built from the installed packages."""
        if self.corpus is not None:
            report = self.corpus / "report.json"
            ids = {
                s: file_sha256(self.corpus / f"{s}.jsonl")
                for s in ("pretrain", "finetune", "eval")
                if (self.corpus / f"{s}.jsonl").exists()
            }
            if "eval" not in ids:
                raise InputNotFoundError(f"{self.corpus}: no eval.jsonl (a corpus directory?)")
            return self.corpus, digest({"corpus": ids, "report": report.exists()})
        from diffembed.data.corpus.build import build_corpus

        path = self.out / "corpus"
        key = {"sources": self.preset.corpus_sources}

        def run() -> None:
            build_corpus(path, sources=self.preset.corpus_sources)

        d = self.stage("corpus", key, [path / "eval.jsonl"], run)
        return path, d

    def stage_tokenizer(self, corpus: Path, corpus_d: str) -> tuple[Path, str]:
        """The study's tokenizer, into ``OUT/tokenizer``: the base LM's when the preset names
        one (``vocab_size`` is then the base's), else a BPE tokenizer trained on the
        pretraining split."""
        from diffembed.model.tokenizer import load_tokenizer, save_tokenizer, train_bpe_tokenizer
        from diffembed.train.pretrain_data import read_corpus_texts

        path = self.out / "tokenizer"
        base = lms.base_dir(self)
        if base is not None:

            def copy() -> None:
                save_tokenizer(load_tokenizer(base), path, overwrite=True)

            key = {"base_tokenizer": file_sha256(base / "tokenizer.json")}
            return path, self.stage("tokenizer", key, [path / "tokenizer.json"], copy)

        def run() -> None:
            docs = read_corpus_texts(corpus, "pretrain")
            tok = train_bpe_tokenizer((t for _, t in docs), self.preset.vocab_size)
            save_tokenizer(tok, path, overwrite=True)  # the stage's own output

        key = {"corpus": corpus_d, "vocab_size": self.preset.vocab_size}
        return path, self.stage("tokenizer", key, [path / "tokenizer.json"], run)

    def stage_tasks(self, corpus: Path, corpus_d: str, tok: Path, tok_d: str) -> tuple[Path, str]:
        """The four evaluation suites, into ``OUT/tasks``."""
        from diffembed.data.tasks.build import build_all

        path = self.out / "tasks"
        caps = self.preset.tasks.as_dict()

        def run() -> None:
            summaries = build_all(corpus, path, seed=0, tokenizer=tok, **caps)
            write_json(self.out / "logs" / "tasks.json", [s.row() for s in summaries])

        key = {
            "corpus": corpus_d,
            "tokenizer": tok_d,
            "caps": caps,
            "seed": 0,
            "code": code_digest(build_all),
        }
        outputs = [path / s / "summary.json" for s in SUITE_ORDER]
        return path, self.stage("tasks", key, outputs, run)

    def stage_pairs(self, corpus: Path, corpus_d: str) -> tuple[Path, str]:
        """The fine-tuning pairs, into ``OUT/pairs/pairs.jsonl``, and the gate's held-out pairs,
        ``OUT/pairs/heldout.jsonl`` (:class:`~diffembed.study.presets.TrainingPairs`): the
        finetune split's pairs less the held-out sample, plus the pretrain split's pairs."""
        from diffembed.data.pairs.build import build_pairs
        from diffembed.formats.pairs import read_pairs, write_pairs
        from diffembed.study.heldout import split_heldout, without_queries

        folder = self.out / "pairs"
        path, heldout = folder / "pairs.jsonl", folder / HELDOUT_PAIRS
        settings = self.preset.pairs.as_dict()
        training = self.preset.training_pairs

        def run() -> None:
            finetune_split = folder / "finetune-split.jsonl"
            report = {"finetune": build_pairs(corpus, finetune_split, seed=0, **settings)}
            train, held = split_heldout(read_pairs(finetune_split), training.heldout, seed=0)
            if training.pretrain_split_per_task is not None:
                extra = folder / "pretrain-split.jsonl"
                report["pretrain"] = build_pairs(
                    corpus,
                    extra,
                    seed=0,
                    **{**settings, "max_per_task": training.pretrain_split_per_task},
                    split="pretrain",
                )
                train += without_queries(read_pairs(extra), held)
            write_pairs(heldout, held)
            write_pairs(path, train)
            report["training_pairs"] = len(train)
            report["heldout_pairs"] = len(held)
            write_json(self.out / "logs" / "pairs.json", report)

        key = {
            "corpus": corpus_d,
            "pairs": settings,
            "training": training.as_dict(),
            "seed": 0,
            "code": code_digest(build_pairs),
        }
        return path, self.stage("pairs", key, [path, heldout], run)

    # ------------------------------------------------------------------ pretraining
    def lm_config(self, lm: LM) -> Any:
        """The pretraining config of ``lm`` (:func:`diffembed.study.lms.lm_config`)."""
        return lms.lm_config(self, lm)

    def stage_lm(self, lm: LM, tok: Path, corpus: Path, deps: dict[str, str]) -> str:
        """One LM into ``OUT/lm/<lm.name>`` (:func:`diffembed.study.lms.stage_lm`)."""
        return lms.stage_lm(self, lm, tok, corpus, deps)

    # ------------------------------------------------------------------ fine-tuning, eval
    def ft_dir(self, row: Row, seed: int) -> Path:
        """The fine-tuned model of ``row`` and ``seed``."""
        return self.out / "ft" / row.name / f"seed{seed}"

    def stage_finetune(self, row: Row, seed: int, pairs: Path, deps: dict[str, str]) -> str:
        """Fine-tune the base LM of ``row`` with ``seed`` into :meth:`ft_dir`."""
        from diffembed.train.finetune import finetune
        from diffembed.train.finetune_config import FinetuneConfig

        path = self.ft_dir(row, seed)
        settings = self.preset.finetune.as_dict()

        def make_config() -> FinetuneConfig:
            return FinetuneConfig(
                model=self.out / "lm" / row.base,
                pairs=pairs,
                out=path,
                attention=row.attention,
                pooling=row.pooling,
                seed=seed,
                device=self.device or "auto",
                show_progress=self.show_progress,
                **settings,
            )

        def run() -> None:
            if path.exists():
                shutil.rmtree(path)
            checkpoints = make_config().checkpoints
            if checkpoints.exists():
                shutil.rmtree(checkpoints)
            finetune(make_config())
            lms.keep_logs(path, self.out / "logs" / "ft" / row.name / f"seed{seed}")

        key = {
            "row": dataclasses.asdict(row),
            "seed": seed,
            "settings": settings,
            "base": deps[row.base],
            "pairs": deps["pairs"],
        }
        return self.stage(f"ft/{row.name}/seed{seed}", key, [path / "modules.json"], run)

    def eval_file(self, name: str, seed: int | None) -> Path:
        """The evaluation result of model ``name`` (a row or a reference) and ``seed``."""
        if seed is None:
            return self.out / "eval" / f"{name}.json"
        return self.out / "eval" / name / f"seed{seed}.json"

    def eval_max_length(self, row: Row, seed: int) -> int:
        """The evaluation length of ``row``'s model: the row's own ``max_length`` when it sets
        one, else the preset's capped at the model's ``max_position_embeddings`` (positions past
        those were never trained)."""
        if row.max_length is not None:
            return row.max_length
        from diffembed.model.model_dir import ModelDir, max_positions

        positions = max_positions(ModelDir(self.ft_dir(row, seed)).config)
        wanted = self.preset.eval.max_length
        return min(wanted, int(positions)) if positions else wanted

    def stage_eval(
        self,
        model: str,
        name: str,
        seed: int | None,
        tasks: Path,
        deps: dict[str, str],
        max_length: int | None = None,
    ) -> str:
        """Evaluate ``model`` (a model directory, ``bm25`` or ``minilm``) on every suite, with
        ``max_length`` (None: the preset's) for embedding models."""
        from diffembed.eval.evaluate import EvalSettings, evaluate_model
        from diffembed.formats.tasks import find_tasks

        out = self.eval_file(name, seed)
        settings = self.preset.eval.as_dict()
        if max_length is not None:
            settings["max_length"] = max_length
        if model == "bm25":
            settings.pop("max_length", None)  # BM25 reads whole documents

        def run() -> None:
            task_dirs = [d for s in SUITE_ORDER for d in find_tasks(tasks, s)]
            evaluate_model(
                model,
                task_dirs,
                out,
                EvalSettings(
                    max_length=settings.get("max_length"),
                    batch_tokens=settings.get("batch_tokens"),
                    device=self.device,
                    seed=seed or 0,
                ),
                show_progress=self.show_progress,
                command=self.command,
            )

        key = {"model": deps.get("model", model), "tasks": deps["tasks"], "settings": settings}
        label = f"eval/{name}" + ("" if seed is None else f"/seed{seed}")
        return self.stage(label, key, [out], run)

    # ------------------------------------------------------------------ the whole run
    def _stage_lms(
        self, rows: Sequence[Row], tok: Path, corpus: Path, lm_deps: dict[str, str]
    ) -> dict[str, str]:
        """Every LM the rows need, and the LMs those continue (e.g. ``mntp`` continues ``ar``),
        in waves of LMs whose inputs are ready (``jobs`` at once); returns digests by name."""
        deps: dict[str, str] = {}
        todo = list(lms_needed([r.base for r in rows]))
        while todo:
            wave = [lm for lm in todo if lm.init is None or lm.init in deps]
            if not wave:  # lms_needed brings every LM's init, so this cannot happen
                raise RuntimeError(f"LMs {[lm.name for lm in todo]} wait on missing inits")
            calls = [
                ("stage_lm", (lm, tok, corpus, {**lm_deps, **self._init_dep(lm, deps)}))
                for lm in wave
            ]
            names = [lm.name for lm in wave]
            deps.update(zip(names, run_calls(self, calls, self.jobs), strict=True))
            todo = [lm for lm in todo if lm not in wave]
        return deps

    @staticmethod
    def _init_dep(lm: LM, deps: dict[str, str]) -> dict[str, str]:
        return {lm.init: deps[lm.init]} if lm.init else {}

    def heldout_file(self, name: str, seed: int) -> Path:
        """The held-out accuracies of row ``name`` and ``seed`` (the gate's measurement)."""
        return self.out / "eval" / name / f"seed{seed}.heldout.json"

    def stage_heldout(self, row: Row, seed: int, data: StudyData, ft_d: str) -> str:
        """Held-out in-batch accuracy of ``row``'s model with ``seed``, per batch
        (:mod:`diffembed.study.heldout`)."""
        from diffembed.formats.pairs import read_pairs
        from diffembed.study.heldout import batch_accuracies, heldout_batches

        out = self.heldout_file(row.name, seed)
        size = self.preset.training_pairs.heldout_batch

        def run() -> None:
            batches = heldout_batches(read_pairs(data.pairs.parent / HELDOUT_PAIRS), size)
            accuracies = batch_accuracies(self.ft_dir(row, seed), batches)
            write_json(
                out,
                {
                    "accuracies": accuracies.tolist(),
                    "tasks": [b[0].task for b in batches],
                    "mean": float(accuracies.mean()) if len(batches) else None,
                    "batch": size,
                },
            )

        key = {"model": ft_d, "pairs": data.pairs_d, "batch": size}
        return self.stage(f"heldout/{row.name}/seed{seed}", key, [out], run)

    def stage_row(self, row: Row, seed: int, data: StudyData, deps: dict[str, str]) -> None:
        """Fine-tune ``row``'s LM with ``seed``, then evaluate it on the suites and on the
        held-out pairs (one chain of stages)."""
        ft_d = self.stage_finetune(row, seed, data.pairs, deps)
        self.stage_eval(
            str(self.ft_dir(row, seed)),
            row.name,
            seed,
            data.tasks,
            {"tasks": data.tasks_d, "model": ft_d},
            max_length=self.eval_max_length(row, seed),
        )
        self.stage_heldout(row, seed, data, ft_d)

    def stage_data(self) -> StudyData:
        """The corpus, tokenizer, tasks and pairs: built, or unpacked from :attr:`pack`."""
        if self.pack is not None:
            from diffembed.study.pack import unpack

            return unpack(self.pack, self.out, self.preset)
        corpus, corpus_d = self.stage_corpus()
        tok, tok_d = self.stage_tokenizer(corpus, corpus_d)
        tasks, tasks_d = self.stage_tasks(corpus, corpus_d, tok, tok_d)
        pairs, pairs_d = self.stage_pairs(corpus, corpus_d)
        return StudyData(corpus, corpus_d, tok, tok_d, tasks, tasks_d, pairs, pairs_d)

    def begin(self) -> None:
        """Create ``out`` with its ``.gitignore`` and ``preset.json``."""
        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.out / ".gitignore") as f:
            f.write(GITIGNORE)
        write_json(self.out / "preset.json", self.preset.to_json())

    def run(self, rows: Sequence[Row] | None = None) -> Path:
        """Run every stage (skipping finished ones), then write the report; returns its path.

        ``rows``: the rows to fine-tune and evaluate (default: the preset's, else all).
        """
        if rows is None:
            rows = select_rows(self.preset.rows)
        start = time.time()
        self.begin()
        data = self.stage_data()
        lm_deps = {"corpus": data.corpus_d, "tokenizer": data.tok_d}
        if self.preset.adapt_curve is not None:
            self.adapt_steps = lms.stage_adapt_curve(self, data.tok, data.corpus, lm_deps)
        deps = {"pairs": data.pairs_d, **self._stage_lms(rows, data.tok, data.corpus, lm_deps)}
        calls: list[tuple[str, tuple[Any, ...]]] = [
            ("stage_eval", (ref, ref, None, data.tasks, {"tasks": data.tasks_d}))
            for ref in self.preset.references
        ]
        calls += [
            ("stage_row", (row, seed, data, deps)) for row in rows for seed in self.preset.seeds
        ]
        run_calls(self, calls, self.jobs)
        return write_report(self, rows, total_start=start)
