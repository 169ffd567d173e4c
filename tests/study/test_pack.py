"""The study on a machine reached by copy: parallel stages (--jobs), a pack of its data
(--write-pack / --pack), the results archive (--archive), and the data-repetition rows."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from diffembed.study.design import LM_BY_NAME, ROW_GROUPS, select_rows
from diffembed.study.pack import unpack, write_archive, write_pack
from diffembed.study.presets import PRESETS
from diffembed.study.stages import Study


def _losses(log: Path) -> list[float]:
    with log.open() as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def _digest(out: Path, stage: str) -> str:
    return json.loads((out / "stages" / f"{stage}.json").read_text())["digest"]


def test_parallel_jobs_rerun_stages_as_one_process_does(smoke: Study, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(smoke.out, out)
    (row,) = select_rows(["ar-causal"])
    rerun = [f"ft__{row.name}__seed{s}" for s in smoke.preset.seeds[:2]]
    rerun += [f"eval__{row.name}__seed{s}" for s in smoke.preset.seeds[:2]]
    for stage in rerun:
        (out / "stages" / f"{stage}.json").unlink()
    preset = dataclasses.replace(smoke.preset, seeds=smoke.preset.seeds[:2])
    study = dataclasses.replace(smoke, out=out, preset=preset, jobs=2, stage_times={})
    study.run([row])
    assert set(study.stage_times) >= {s.replace("__", "/") for s in rerun}
    for stage in rerun:  # same keys, and the same training as the sequential run
        assert _digest(out, stage) == _digest(smoke.out, stage)
    for seed in preset.seeds:
        log = Path("logs") / "ft" / row.name / f"seed{seed}" / "log.csv"
        assert _losses(out / log) == pytest.approx(_losses(smoke.out / log), rel=1e-3)
        new = json.loads(study.eval_file(row.name, seed).read_text())
        assert new["settings"]["max_length"] == study.eval_max_length(row, seed)


def test_a_pack_starts_the_study_without_the_corpus(smoke: Study, tmp_path: Path) -> None:
    rows = select_rows(["ar-causal", "diffusion-repeat-bi"])
    # the pack is written from the smoke study's data (up to date: nothing rebuilt)
    packer = dataclasses.replace(smoke, stage_times={})
    manifest = write_pack(packer, rows, tmp_path / "smoke.pack.tar.gz")
    assert manifest["tokens"]["stored"] <= manifest["tokens"]["documents"]
    assert all(t == 0.0 or t < 60 for t in packer.stage_times.values())

    out = tmp_path / "from-pack"
    preset = dataclasses.replace(smoke.preset, seeds=(0,))
    study = Study(
        preset=preset,
        out=out,
        device="cpu",
        show_progress=False,
        pack=tmp_path / "smoke.pack.tar.gz",
    )
    study.run(rows)
    # the data stages are the pack's; the AR LM trained on the same blocks with the same key
    for stage in ("tokenizer", "tasks", "pairs", "lm-ar"):
        assert _digest(out, stage) == _digest(smoke.out, stage)
    log = Path("logs") / "lm" / "ar" / "train_log.csv"
    assert _losses(out / log) == pytest.approx(_losses(smoke.out / log), rel=1e-5)
    # the repetition LM read a pool of 1/E of its tokens, E times
    stats = json.loads((out / "logs" / "lm" / "diffusion-repeat" / "pretrain.json").read_text())
    assert stats["data"]["epochs"] >= preset.repeat_epochs * 0.5
    assert (out / "report.md").exists() and study.eval_file("diffusion-repeat-bi", 0).exists()

    files = write_archive(study, tmp_path / "archive", study.ft_dir(rows[0], 0))
    assert [f.name for f in files] == ["results.tar.gz", "model.tar.gz"]
    with tarfile.open(files[0]) as tar:
        names = tar.getnames()
    assert "from-pack/report.md" in names and "from-pack/summary.json" in names
    heavy = {"lm", "ft", "tasks", "pairs", "tokenizer", "pretrain-tokens.npz"}
    assert not [n for n in names if set(n.split("/")[1:2]) & heavy]
    with tarfile.open(files[1]) as tar:
        assert "seed0/model.safetensors" in tar.getnames()

    with pytest.raises(ValueError, match="written for preset 'smoke', not 'cpu'"):
        unpack(tmp_path / "smoke.pack.tar.gz", tmp_path / "other", PRESETS["cpu"])


def test_repetition_rows_spend_the_ar_tokens_from_a_smaller_pool(tmp_path: Path) -> None:
    for preset in PRESETS.values():
        study = Study(preset=preset, out=tmp_path)
        lms = {r.base: study.lm_config(LM_BY_NAME[r.base]) for r in select_rows(["repetition"])}
        ar = lms["ar"]
        for name in ("ar-repeat", "diffusion-repeat", "diffusion-unique"):
            assert (lms[name].steps, lms[name].tokens_per_step) == (ar.steps, ar.tokens_per_step)
        pool = ar.steps * ar.tokens_per_step // preset.repeat_epochs
        assert lms["ar-repeat"].unique_tokens == lms["diffusion-repeat"].unique_tokens == pool
        assert lms["diffusion-unique"].unique_tokens == ar.unique_tokens  # the preset's pool
        assert (lms["ar-repeat"].objective, lms["diffusion-repeat"].objective) == (
            "ar",
            "diffusion",
        )
    assert set(ROW_GROUPS["repetition"]) == {r.name for r in select_rows(["repetition"])}


def test_gpu_short_setup_at_toy_size(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from corpus_fixture import write_study_corpus
    from diffembed.cli.main import main

    preset = PRESETS["gpu-short"]
    assert preset.jobs > 1 and preset.references == ("bm25",)  # nothing to carry but the pack
    study = Study(preset=preset, out=tmp_path)
    lms = [study.lm_config(LM_BY_NAME[r.base]) for r in select_rows(preset.rows)]
    assert all(c.compile and c.precision == "bf16" for c in lms)
    corpus = write_study_corpus(tmp_path / "corpus")
    pack = tmp_path / "gpu-short.pack.tar.gz"
    args = ["reproduce", "--preset", "gpu-short", "--corpus", str(corpus), "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "here"), "--write-pack", str(pack)]) == 0
    assert "wrote" in capsys.readouterr().out
    data = unpack(pack, tmp_path / "there", preset)
    assert data.corpus.name == "pretrain-tokens.npz" and data.corpus.exists()
    assert (data.tasks / "traditional").is_dir() and data.pairs.stat().st_size > 0
    # the toy corpus is smaller than the budget: every pretraining document is in the pack
    manifest = json.loads((tmp_path / "there" / "pack.json").read_text())
    assert manifest["tokens"]["stored"] == manifest["tokens"]["documents"]
    cpu = ["reproduce", "--preset", "cpu", "--pack", str(pack), "--out", str(tmp_path / "x")]
    assert main(cpu) == 2
    assert "written for preset 'gpu-short'" in capsys.readouterr().err
    assert main([*cpu, "--corpus", str(corpus)]) == 2
    assert "--pack replaces the corpus" in capsys.readouterr().err
