"""The study (``diffembed reproduce``): verdict rules, suite scores, stage skipping, and the smoke
preset end to end with every number of its report traced back to a result file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from diffembed.study.analysis import TaskScores, suite_score, task_group, verdict
from diffembed.study.design import (
    CLAIMS,
    CONTRASTS,
    EXTRA_ROWS,
    LM_BY_NAME,
    MAIN_ROWS,
    PRIMARY,
    ROW_NAMES,
    ROWS,
    SUITE_LABELS,
    SUITE_ORDER,
    Claim,
    lms_needed,
    select_rows,
)
from diffembed.study.presets import PRESETS
from diffembed.study.stages import Study

SMOKE_ROWS = select_rows(PRESETS["smoke"].rows)
# the contrasts whose two rows the smoke run has (all but the repetition ones)
SMOKE_CONTRASTS = [(a, b) for a, b in CONTRASTS if {a, b} <= {r.name for r in SMOKE_ROWS}]


def test_verdict_rules() -> None:
    gain = Claim("longdoc", 20.0, "gain")
    assert verdict(gain, 3.0, 0.5, 5.0) == "reproduced"
    assert verdict(gain, -3.0, -5.0, -0.5) == "not reproduced"
    assert verdict(gain, 1.0, -1.0, 3.0) == "inconclusive"
    parity = Claim("traditional", 0.0, "parity", margin=2.0)
    assert verdict(parity, 0.5, -1.5, 1.9) == "reproduced"
    assert verdict(parity, 4.0, 2.5, 6.0) == "not reproduced"
    assert verdict(parity, -4.0, -6.0, -2.5) == "not reproduced"
    assert verdict(parity, 1.0, -1.0, 3.0) == "inconclusive"
    assert verdict(gain, float("nan"), float("nan"), float("nan")) == "inconclusive"
    assert {c.suite for c in CLAIMS} == set(SUITE_ORDER)


def test_passkey_and_needle_lengths_form_one_group_each() -> None:
    assert task_group("passkey-256") == task_group("passkey-32768") == "passkey"
    assert task_group("needle-1024") == "needle"
    assert task_group("man-page") == "man-page"

    def ts(task: str, values: list[float]) -> TaskScores:
        return TaskScores(
            "longdoc",
            task,
            "m",
            "retrieval",
            [f"q{i}" for i in range(len(values))],
            np.array([values]),
        )

    scores = {
        "longdoc/passkey-256": ts("passkey-256", [1.0, 1.0]),
        "longdoc/passkey-512": ts("passkey-512", [0.0, 0.0]),
        "longdoc/man-page": ts("man-page", [0.2, 0.4]),
    }
    # groups: passkey (1.0 + 0.0) / 2 = 0.5, man-page 0.3 -> (0.5 + 0.3) / 2 = 0.4
    assert suite_score(scores, "longdoc", None) == pytest.approx(40.0)
    idx = {k: np.array([0, 0]) for k in scores}
    assert suite_score(scores, "longdoc", idx) == pytest.approx((0.5 + 0.2) / 2 * 100)
    assert np.isnan(suite_score(scores, "reasoning", None))


def test_similarity_statistic_is_the_mean_pearson_over_seeds() -> None:
    gold = np.array([1.0, 2.0, 3.0, 4.0])
    values = np.array([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]])
    ts = TaskScores("traditional", "lee50", "pearson", "similarity", list("abcd"), values, gold)
    assert ts.statistic() == pytest.approx(0.0)
    assert ts.statistic(np.array([0, 1, 2])) == pytest.approx(0.0)
    monotone = np.array([[1.0, 2.0, 3.0, 10.0]])
    rho = TaskScores(
        "traditional", "simlex", "spearman", "similarity", list("abcd"), monotone, gold
    )
    assert rho.statistic() == pytest.approx(1.0)  # ranks agree although the values are not linear


def test_stage_skips_unchanged_and_reruns_changed(tmp_path: Path) -> None:
    study = Study(preset=PRESETS["smoke"], out=tmp_path)
    calls: list[int] = []
    target = tmp_path / "thing.txt"

    def run() -> None:
        calls.append(1)
        target.write_text("x")

    d1 = study.stage("thing", {"a": 1}, [target], run)
    d2 = study.stage("thing", {"a": 1}, [target], run)
    assert d1 == d2 and len(calls) == 1
    study.stage("thing", {"a": 2}, [target], run)
    assert len(calls) == 2
    target.unlink()  # a missing output reruns the stage even with the same key
    study.stage("thing", {"a": 2}, [target], run)
    assert len(calls) == 3
    with pytest.raises(RuntimeError, match="without writing"):
        study.stage("other", {}, [tmp_path / "never.txt"], lambda: None)


def _write_package(root: Path, package: str, room: str, helper_value: int) -> None:
    """A package with a builder ``entry.build`` in ``room`` calling a sibling module (relative
    imports, so that the files do not name their package) and a module it does not import."""
    (root / package / room).mkdir(parents=True)
    (root / package / "__init__.py").write_text("")
    (root / package / room / "__init__.py").write_text("")
    (root / package / room / "entry.py").write_text(
        "def build():\n    from .helper import value\n\n    return value()\n"
    )
    (root / package / room / "helper.py").write_text(f"def value():\n    return {helper_value}\n")
    (root / package / room / "unused.py").write_text("X = 1\n")


def test_code_key_follows_the_called_code_not_module_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    from diffembed.study.stages import code_digest, code_files

    monkeypatch.syspath_prepend(str(tmp_path))
    _write_package(tmp_path, "studykeya", "data", 1)
    _write_package(tmp_path, "studykeyb", "moved", 1)  # same code, other package and room names
    _write_package(tmp_path, "studykeyc", "data", 2)  # the called helper changed
    builds = {
        p: importlib.import_module(f"{p}.{room}.entry").build
        for p, room in (("studykeya", "data"), ("studykeyb", "moved"), ("studykeyc", "data"))
    }
    assert {f.name for f in code_files(builds["studykeya"])} == {"entry.py", "helper.py"}
    assert code_digest(builds["studykeya"]) == code_digest(builds["studykeyb"])
    assert code_digest(builds["studykeya"]) != code_digest(builds["studykeyc"])
    (tmp_path / "studykeya" / "data" / "unused.py").write_text("X = 2\n")  # not called
    assert code_digest(builds["studykeya"]) == code_digest(builds["studykeyb"])


def test_data_stage_keys_cover_the_builders_they_call() -> None:
    from diffembed.data.pairs.build import build_pairs
    from diffembed.data.tasks import instruct, longdoc, reasoning, traditional
    from diffembed.data.tasks.build import build_all
    from diffembed.study.stages import code_files

    task_files = code_files(build_all)
    for module in (instruct, longdoc, reasoning, traditional):
        assert Path(module.__file__).resolve() in task_files
    assert Path(reasoning.__file__).resolve() in code_files(build_pairs)  # held-out problems


def test_typed_presets_fit_their_callees_and_serialise_as_before() -> None:
    import dataclasses
    import inspect

    from diffembed.data.pairs.build import build_pairs
    from diffembed.data.tasks.build import build_all
    from diffembed.train.finetune_config import FinetuneConfig
    from diffembed.train.pretrain import PRESETS as LM_PRESETS
    from diffembed.train.pretrain_config import PretrainConfig

    def names(obj: object) -> set[str]:
        return {f.name for f in dataclasses.fields(obj)}  # type: ignore[arg-type]

    for preset in PRESETS.values():
        assert preset.pretrain_preset in LM_PRESETS
        adapt = names(preset.adapt.overrides("diffusion")) | names(preset.adapt.overrides("mntp"))
        assert names(preset.pretrain) | names(preset.mntp) | adapt <= names(PretrainConfig)
        assert names(preset.finetune) <= names(FinetuneConfig)
        assert names(preset.tasks) <= set(inspect.signature(build_all).parameters)
        assert names(preset.pairs) <= set(inspect.signature(build_pairs).parameters)
    # the committed cpu run's preset.json: the settings its data, AR and MNTP stages are keyed on
    # are the same, so a rerun reuses them (fine-tuning and evaluation may change between
    # editions; the report lists such changes)
    committed = Path(__file__).resolve().parents[2] / "results" / "cpu" / "preset.json"
    if committed.exists():
        expected = json.loads(committed.read_text())
        now = json.loads(json.dumps(PRESETS["cpu"].to_json()))
        for key in ("vocab_size", "pretrain_preset", "pretrain", "mntp", "tasks", "pairs"):
            assert now[key] == expected[key], key


def test_rows_name_their_lms_and_the_primary_contrast_is_fixed() -> None:
    assert PRIMARY == ("ar-diffusion-bi", "ar-mntp-bi")
    assert {n for pair in CONTRASTS for n in pair} <= set(ROW_NAMES)
    assert set(MAIN_ROWS) == {
        "ar-diffusion-bi",
        "ar-mntp-bi",
        "ar-mntp-matched-bi",
        "ar-causal",
        "random-bi",
    }
    assert set(EXTRA_ROWS) == {"diffusion-bi"} and not set(EXTRA_ROWS) & set(MAIN_ROWS)
    assert select_rows(["extras"]) == select_rows(["diffusion-bi"])
    assert all(r.base in LM_BY_NAME for r in ROWS)
    for name in ("ar-diffusion-bi", "ar-mntp-bi", "ar-mntp-matched-bi", "random-bi"):
        (row,) = select_rows([name])
        assert (row.attention, row.pooling) == ("bidirectional", "mean")
    # an adapted LM brings the AR LM it continues, before it
    needed = [lm.name for lm in lms_needed(["ar-diffusion", "mntp-matched"])]
    assert needed == ["ar", "ar-diffusion", "mntp-matched"]
    assert [lm.name for lm in lms_needed(["random"])] == ["random"]
    for preset in PRESETS.values():
        assert set(preset.rows or ROW_NAMES) >= set(MAIN_ROWS), preset.name


def _fake_base(path: Path, **config: object) -> Path:
    """A directory with the ``pretrain.json`` of an AR run (all the study reads of a base to
    size its LMs)."""
    path.mkdir(parents=True, exist_ok=True)
    values = dict(objective="ar", layers=2, hidden=64, heads=2, kv_heads=2, ffn=128)
    values.update(seq_len=128, steps=50, heldout_ids=["doc-1"], unique_tokens=10**6)
    (path / "pretrain.json").write_text(json.dumps({"config": {**values, **config}}))
    return path


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_adaptation_rows_are_compute_matched(name: str, tmp_path: Path) -> None:
    import dataclasses

    preset = PRESETS[name]
    if preset.base is not None:  # the base's shared fields, from a stand-in base
        preset = dataclasses.replace(preset, base=str(_fake_base(tmp_path / "base")))
    study = Study(preset=preset, out=tmp_path)
    config = {lm: study.lm_config(LM_BY_NAME[lm]) for lm in LM_BY_NAME}  # each one validated
    assert len({c.tokens_per_step for c in config.values()}) == 1
    m = preset.adapt.steps
    if preset.base is not None:
        for c in config.values():  # every LM has the base's architecture and held-out documents
            assert (c.layers, c.hidden, c.seq_len, c.heldout_ids) == (2, 64, 128, ["doc-1"])
        config["ar"] = dataclasses.replace(config["ar"], steps=50)  # the base's own steps
    study.adapt_steps = m // 2  # a measured M replaces the preset's maximum
    assert study.lm_config(LM_BY_NAME["ar-diffusion"]).steps == m // 2
    study.adapt_steps = None
    ar, adapted, matched = config["ar"], config["ar-diffusion"], config["mntp-matched"]
    assert (adapted.objective, adapted.steps, adapted.shift) == ("diffusion", m, True)
    assert 0 < adapted.anneal_steps == preset.adapt.anneal_steps < m
    assert (matched.objective, matched.steps, matched.anneal_steps) == ("mntp", m, 0)
    assert config["mntp"].steps < m  # the short (LLM2Vec) MNTP
    assert config["mntp"].objective == "mntp"
    # from scratch: the AR LM's tokens + M
    assert (config["diffusion"].steps, config["diffusion"].anneal_steps) == (ar.steps + m, 0)
    assert not config["diffusion"].shift


# ------------------------------------------------------------------------------ smoke run
def _main_table(report: str) -> dict[str, list[float]]:
    """Model name -> the point estimates of the four suites, parsed from report.md."""
    section = report.split("## Main table", 1)[1].split("##", 1)[0]
    rows: dict[str, list[float]] = {}
    for line in section.splitlines():
        m = re.match(r"\| `([^`]+)`: .*?\|(.*)\|$", line)
        if m:
            cells = [c.strip() for c in m.group(2).split("|")][1:]  # after the learned flag
            rows[m.group(1)] = [float(c.split()[0]) for c in cells]
    return rows


def _recompute(files: list[Path], suite: str) -> float:
    """Suite score x100 from the main scores written by evaluate: mean over task groups of the
    mean over tasks of the mean over seeds (independent of diffembed.study.analysis's code path)."""
    by_task: dict[str, list[float]] = {}
    for f in files:
        for rec in json.loads(f.read_text())["tasks"]:
            if rec["suite"] == suite:
                by_task.setdefault(rec["task"], []).append(rec["main_score"])
    groups: dict[str, list[float]] = {}
    for task, values in by_task.items():
        group = re.sub(r"^(passkey|needle)-\d+$", r"\1", task)
        groups.setdefault(group, []).append(float(np.mean(values)))
    return 100 * float(np.mean([np.mean(v) for v in groups.values()]))


def test_smoke_report_structure_and_every_number_traces_to_results(smoke: Study) -> None:
    out = smoke.out
    report = (out / "report.md").read_text()
    for heading in ("## Main table", "## The paper's claims", "## Figures", "## Provenance"):
        assert heading in report
    for png in ("longdoc_lengths", "longdoc_position", "pretraining", "finetuning"):
        assert (out / "figures" / f"{png}.png").stat().st_size > 1000
        assert f"figures/{png}.png" in report
    table = _main_table(report)
    assert set(table) == {r.name for r in SMOKE_ROWS} | set(smoke.preset.references)
    summary = json.loads((out / "summary.json").read_text())
    for name, values in table.items():
        files = [out / f for f in summary["files"][name]]
        assert len(files) == (1 if name in smoke.preset.references else len(smoke.preset.seeds))
        for suite, shown in zip(SUITE_ORDER, values, strict=True):
            assert shown == pytest.approx(_recompute(files, suite), abs=0.051), (name, suite)
            lo, hi = summary["table"][name][suite]["ci95"]
            assert lo <= summary["table"][name][suite]["score"] + 1e-9
    # verdicts: one per claim, from the primary contrast, consistent with its CI
    claims = report.split("## The paper's claims", 1)[1].split("Other contrasts", 1)[0]
    for v in summary["verdicts"]:
        d = summary["table"][PRIMARY[0]][v["suite"]]["score"]
        d -= summary["table"][PRIMARY[1]][v["suite"]]["score"]
        assert v["measured"] == pytest.approx(d)
        assert f"| {SUITE_LABELS[v['suite']]} |" in claims and f"**{v['verdict']}**" in claims
    # provenance of every result file
    for files in summary["files"].values():
        for f in files:
            prov = json.loads((out / f).read_text())["provenance"]
            assert prov["wall_time_s"] >= 0 and "machine" in prov and "git_commit" in prov
    assert summary["provenance"]["stage_wall_time_s"]
    assert set(summary["contrasts"]) == {f"{a} - {b}" for a, b in SMOKE_CONTRASTS}


def test_smoke_adapts_the_ar_lm_for_the_m_its_curve_chose(smoke: Study) -> None:
    from diffembed.study.design import choose_adaptation_steps

    adapt, curve = smoke.preset.adapt, smoke.preset.adapt_curve
    assert curve is not None
    measured = json.loads((smoke.out / "logs" / "adapt-curve.json").read_text())
    points = [(p["step"], p["loss"]) for p in measured["points"]]
    assert [s for s, _ in points] == list(
        range(curve.eval_every, curve.steps + 1, curve.eval_every)
    )
    m = choose_adaptation_steps(points, curve.min_gain, curve.steps)
    assert measured["chosen_steps"] == m == smoke.adapt_steps
    report = (smoke.out / "report.md").read_text()
    assert f"**M = {m:,} steps" in report
    lm = json.loads((smoke.out / "lm" / "ar-diffusion" / "config.json").read_text())
    assert lm["diffembed_shift"] is True and lm["diffembed_anneal_steps"] == adapt.anneal_steps
    assert lm["diffembed_init"] == str(smoke.out / "lm" / "ar")
    for name in ("ar-diffusion", "mntp-matched"):
        log = (smoke.out / "logs" / "lm" / name / "train_log.csv").read_text().splitlines()
        assert int(log[-1].split(",")[0]) == m, name


def test_adaptation_budget_rule() -> None:
    from diffembed.study.design import choose_adaptation_steps

    # gains per doubling: 125 -> 250: 0.30, 250 -> 500: 0.10, 500 -> 1000: 0.04
    points = [(125, 5.0), (250, 4.7), (500, 4.6), (1000, 4.56), (2000, 4.55)]
    assert choose_adaptation_steps(points, 0.05, 2000) == 500
    assert choose_adaptation_steps(points, 0.2, 2000) == 250
    assert choose_adaptation_steps(points, 0.001, 2000) == 2000  # never flat: the maximum
    assert choose_adaptation_steps(list(reversed(points)), 0.05, 2000) == 500  # any order
    assert choose_adaptation_steps([(375, 4.0), (500, 3.99)], 0.05, 500) == 500  # no doubling


def test_rerun_skips_finished_stages(smoke: Study) -> None:
    markers = {p: p.stat().st_mtime_ns for p in (smoke.out / "stages").glob("*.json")}
    assert len(markers) >= 2 * len(SMOKE_ROWS) * len(smoke.preset.seeds)
    Study(preset=smoke.preset, out=smoke.out, corpus=smoke.corpus, show_progress=False).run()
    assert {p: p.stat().st_mtime_ns for p in markers} == markers


def test_outputs_heavy_files_are_git_ignored(smoke: Study) -> None:
    ignore = (smoke.out / ".gitignore").read_text().split()
    for heavy in ("/lm/", "/ft/", "/tasks/", "/tokenizer/"):
        assert heavy in ignore
    # the fine-tuned models are complete embedding models
    from diffembed.model.embedder import Embedder

    emb = Embedder.load(smoke.ft_dir(SMOKE_ROWS[0], smoke.preset.seeds[0]))
    vec = emb.encode(["a query about harbours"])
    assert vec.shape[0] == 1 and np.isfinite(vec).all()


def test_export_best_writes_a_loadable_model_with_its_card(smoke: Study, tmp_path: Path) -> None:
    from diffembed.model.embedder import Embedder
    from diffembed.study.report import export_best

    dest = export_best(smoke, tmp_path / "tiny")
    card = (dest / "README.md").read_text()
    assert f"`{PRIMARY[0]}`" in card and "adapted from the `ar` LM" in card
    assert "git commit" in card
    emb = Embedder.load(dest)
    positions = emb.backbone.config.max_position_embeddings
    # the study's evaluation length, never past the positions the model was trained on
    assert emb.max_length == min(smoke.preset.eval.max_length, positions)
    assert np.isfinite(emb.encode(["harbour repairs"])).all()


# ------------------------------------------------------------------------------ learning, compute
def _table(scores: dict[str, list[float]]) -> dict[str, dict[str, dict[str, float]]]:
    return {
        n: {s: {"score": v} for s, v in zip(SUITE_ORDER, vs, strict=True)}
        for n, vs in scores.items()
    }


def test_the_gate_is_held_out_accuracy_above_the_control_with_a_paired_ci() -> None:
    from diffembed.study.heldout import gate

    rng = np.random.default_rng(0)
    control = rng.uniform(0.02, 0.08, size=(3, 40))  # 3 seeds x 40 batches, near chance
    accuracies = {
        "random-bi": control,
        "ar-mntp-bi": control + 0.05,  # above the control on every batch: learned
        "ar-diffusion-bi": control + rng.normal(0, 0.02, size=control.shape),  # noise only
        "ar-causal": control - 0.03,
    }
    result = gate(accuracies, "random-bi", n_boot=500, confidence=0.95)
    assert "learned" not in result["random-bi"]
    assert result["ar-mntp-bi"]["learned"] is True
    assert result["ar-mntp-bi"]["diff"] == pytest.approx(0.05)
    lo, hi = result["ar-mntp-bi"]["diff_ci"]
    assert lo == pytest.approx(0.05) and hi == pytest.approx(0.05)  # a constant difference
    noisy = result["ar-diffusion-bi"]
    assert noisy["learned"] is False and noisy["diff_ci"][0] < 0 < noisy["diff_ci"][1]
    assert result["ar-causal"]["learned"] is False
    assert result["ar-mntp-bi"]["seeds"] == pytest.approx(list((control + 0.05).mean(axis=1)))
    assert gate(accuracies, "random-bi", 500, 0.95) == result  # seeded: the same CIs
    with pytest.raises(ValueError, match="different batches"):
        gate({"random-bi": control, "x": control[:, :10]}, "random-bi", 10, 0.95)


def test_learning_follows_the_gate_and_reports_suites_as_information() -> None:
    from diffembed.study.analysis import learning

    table = _table(
        {
            "random-bi": [10.0, 10.0, 10.0, 10.0],
            "ar-mntp-bi": [5.0, 5.0, 5.0, 13.0],  # below random on 3 suites, but learned
            "ar-diffusion-bi": [15.0, 15.0, 15.0, 15.0],  # above on 4 suites, did not learn
            "ar-causal": [10.0, 11.0, 12.0, float("nan")],  # a tie and a NaN do not count
        }
    )
    gated = {
        "random-bi": {"accuracy": 0.05},
        "ar-mntp-bi": {"accuracy": 0.3, "learned": True},
        "ar-diffusion-bi": {"accuracy": 0.05, "learned": False},
    }
    flags = learning(table, list(table), gated)
    assert flags["ar-mntp-bi"]["learned"] is True and flags["ar-mntp-bi"]["status"] == "learned"
    assert flags["ar-mntp-bi"]["beats_control"] == ["traditional"]
    assert flags["ar-mntp-bi"]["heldout"] == gated["ar-mntp-bi"]
    assert flags["ar-diffusion-bi"]["learned"] is False
    assert flags["ar-diffusion-bi"]["status"] == "did not learn"
    assert flags["ar-causal"]["learned"] is None  # not measured: not checked
    assert flags["ar-causal"]["beats_control"] == ["reasoning", "instruct"]
    assert flags["random-bi"]["status"] == "control" and flags["random-bi"]["learned"] is None
    no_control = learning(table, ["ar-mntp-bi"], {"ar-mntp-bi": gated["ar-mntp-bi"]})
    assert no_control["ar-mntp-bi"]["learned"] is None


def test_a_contrast_with_a_row_that_did_not_learn_is_not_judged() -> None:
    from diffembed.study.analysis import _verdicts, contrast_status, learning

    names = ["random-bi", "ar-mntp-bi", "ar-diffusion-bi", "ar-mntp-matched-bi"]
    table = _table({n: [10.0] * 4 for n in names})
    gated = {
        "random-bi": {},
        "ar-mntp-bi": {"learned": True},
        "ar-diffusion-bi": {"learned": False},
        "ar-mntp-matched-bi": {"learned": True},
    }
    flags = learning(table, names, gated)
    assert contrast_status("ar-mntp-matched-bi", "ar-mntp-bi", flags) == "judged"
    assert contrast_status("ar-mntp-matched-bi", "random-bi", flags) == "judged"
    assert (
        contrast_status("ar-diffusion-bi", "ar-mntp-bi", flags)
        == "not judged: ar-diffusion-bi did not learn"
    )
    primary = {s: {"diff": 10.0, "ci95": [5.0, 15.0]} for s in SUITE_ORDER}
    contrasts = {f"{PRIMARY[0]} - {PRIMARY[1]}": primary}
    verdicts = _verdicts(contrasts, flags)
    assert len(verdicts) == len(CLAIMS)
    assert {v["verdict"] for v in verdicts} == {"not judged: ar-diffusion-bi did not learn"}
    flags["ar-diffusion-bi"]["learned"] = True
    assert {v["verdict"] for v in _verdicts(contrasts, flags)} == {
        "reproduced",
        "not reproduced",  # parity: +10 [5, 15] lies outside +-2
    }


def test_smoke_flags_learning_and_judges_only_rows_that_learned(smoke: Study) -> None:
    summary = json.loads((smoke.out / "summary.json").read_text())
    report = (smoke.out / "report.md").read_text()
    learned = summary["learning"]
    assert set(learned) == {r.name for r in SMOKE_ROWS}
    assert learned["random-bi"]["status"] == "control"
    random = [summary["table"]["random-bi"][s]["score"] for s in SUITE_ORDER]
    control_acc = np.array(
        [
            json.loads(smoke.heldout_file("random-bi", s).read_text())["accuracies"]
            for s in smoke.preset.seeds
        ]
    ).mean(axis=0)
    assert len(control_acc) >= 2  # the smoke held-out pairs fill batches
    for name, info in learned.items():
        if name == "random-bi":
            continue
        scores = [summary["table"][name][s]["score"] for s in SUITE_ORDER]
        above = sum(a > b for a, b in zip(scores, random, strict=True))
        assert len(info["beats_control"]) == above, name
        # the gate, recomputed from the held-out files: mean difference and its CI's sign
        acc = np.array(
            [
                json.loads(smoke.heldout_file(name, s).read_text())["accuracies"]
                for s in smoke.preset.seeds
            ]
        ).mean(axis=0)
        held = info["heldout"]
        assert held["diff"] == pytest.approx(float((acc - control_acc).mean()))
        assert held["diff_ci"][0] <= held["diff"] <= held["diff_ci"][1]
        assert info["learned"] == (held["diff_ci"][0] > 0), name
        line = next(ln for ln in report.splitlines() if ln.startswith(f"| `{name}`: "))
        assert ("did not learn" in line) == (not info["learned"])
        final = info["finetune_final"]
        assert {"loss", "accuracy", "doc_cosine"} <= set(final)
    for v in summary["verdicts"]:
        failed = [n for n in PRIMARY if learned[n]["learned"] is False]
        if failed:
            assert v["verdict"] == f"not judged: {', '.join(failed)} did not learn"
    assert set(summary["contrast_status"]) == {f"{a} - {b}" for a, b in SMOKE_CONTRASTS}
    for a, b in SMOKE_CONTRASTS:
        status = summary["contrast_status"][f"{a} - {b}"]
        failed = [n for n in (a, b) if learned[n]["learned"] is False]
        assert status == (f"not judged: {', '.join(failed)} did not learn" if failed else "judged")
    assert "## Fine-tuning: did each row learn?" in report


def test_smoke_finetuning_figure_has_a_panel_per_quantity(smoke: Study) -> None:
    import matplotlib.image

    image = matplotlib.image.imread(smoke.out / "figures" / "finetuning.png")
    height, width = image.shape[:2]
    assert width > 2.5 * height  # three panels side by side
    header = (smoke.out / "logs" / "ft" / SMOKE_ROWS[0].name / "seed0" / "log.csv").read_text()
    assert header.split("\n", 1)[0].split(",")[:4] == ["step", "loss", "accuracy", "doc_cosine"]


def test_smoke_pretraining_tokens_and_flops_match_a_hand_computation(smoke: Study) -> None:
    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    preset = smoke.preset
    cfg = AutoConfig.from_pretrained(smoke.out / "lm" / "ar")
    with torch.device("meta"):
        params = sum(p.numel() for p in LlamaForCausalLM(cfg).parameters())
    from diffembed.train.pretrain import PRESETS as LM_PRESETS
    from diffembed.train.pretrain_config import PretrainConfig

    lm = PretrainConfig(**LM_PRESETS[preset.pretrain_preset])
    per_step = lm.global_batch * lm.seq_len
    pt, mntp, adapt = preset.pretrain.steps, preset.mntp.steps, smoke.adapt_steps
    steps = {
        "ar-diffusion-bi": pt + adapt,  # ar, then the diffusion adaptation
        "ar-mntp-bi": pt + mntp,
        "ar-mntp-matched-bi": pt + adapt,
        "diffusion-bi": pt + adapt,  # from scratch for the AR LM's tokens + M
        "ar-bi": pt,
        "ar-causal": pt,
        "random-bi": 0,
    }
    summary = json.loads((smoke.out / "summary.json").read_text())
    report = (smoke.out / "report.md").read_text()
    section = report.split("## Pretraining compute", 1)[1].split("\n## ", 1)[0]
    for name, n in steps.items():
        row = summary["pretraining"][name]
        assert row["tokens"] == n * per_step, name
        assert row["flops"] == pytest.approx(6 * params * n * per_step), name
        line = next(ln for ln in section.splitlines() if ln.startswith(f"| `{name}` |"))
        assert f"{n * per_step:,d}" in line
    assert list(summary["pretraining"]["ar-diffusion-bi"]["chain"]) == ["ar", "ar-diffusion"]


def test_smoke_eval_length_is_capped_at_trained_positions(smoke: Study) -> None:
    summary = json.loads((smoke.out / "summary.json").read_text())
    report = (smoke.out / "report.md").read_text()
    for row in SMOKE_ROWS:
        for seed in smoke.preset.seeds:
            config = json.loads((smoke.ft_dir(row, seed) / "config.json").read_text())
            positions = config["max_position_embeddings"]
            used = json.loads(smoke.eval_file(row.name, seed).read_text())["settings"]
            expected = min(smoke.preset.eval.max_length, positions)
            assert used["max_length"] == expected == smoke.eval_max_length(row, seed)
        assert summary["learning"][row.name]["eval_max_length"] == [expected] * len(
            smoke.preset.seeds
        )
        line = next(ln for ln in report.splitlines() if ln.startswith(f"| `{row.name}` | "))
        assert f"| {expected} |" in line
    assert expected < smoke.preset.eval.max_length  # the cap bites in the smoke preset
    # a row that says otherwise keeps its own length
    import dataclasses

    longer = dataclasses.replace(ROWS[0], max_length=4096)
    assert smoke.eval_max_length(longer, smoke.preset.seeds[0]) == 4096
