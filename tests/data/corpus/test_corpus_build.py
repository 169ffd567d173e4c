"""build_corpus on a fixture root: splits, determinism, report, missing packages, atomicity, CLI."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pytest

from diffembed.cli.data import add_corpus_parser
from diffembed.data.corpus import (
    SPLITS,
    CorpusTooSmallError,
    all_packages,
    build_corpus,
    split_of,
)
from diffembed.data.corpus.sources import package_files, package_version, resolve_sources

N_SYNSETS = 400


def _install(root: Path, package: str, version: str, files: dict[str, bytes]) -> None:
    """Write ``files`` under ``root`` and register them as an installed dpkg package."""
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True, exist_ok=True)
    dirs = set()
    for rel, data in files.items():
        p = root / rel.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        for parent in Path(rel).parents:
            dirs.add(str(parent))
    listing = ["/."] + sorted(d for d in dirs if d != "/") + sorted(files)
    (info / f"{package}.list").write_text("\n".join(listing) + "\n")
    with (root / "var/lib/dpkg/status").open("a") as fh:
        fh.write(f"Package: {package}\nStatus: install ok installed\nVersion: {version}\n\n")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    nouns = "".join(
        f"{i:08d} 05 n 01 animal_{i} 0 001 @ 00000001 n 0000 | creature number {i} of the "
        f'fixture; "example {i}"  \n'
        for i in range(1, N_SYNSETS + 1)
    )
    _install(
        r,
        "wordnet-base",
        "1:3.0-37",
        {
            "/usr/share/wordnet/data.noun": b"  1 licence line  \n" + nouns.encode(),
            "/usr/share/wordnet/data.verb": b"",
            "/usr/share/wordnet/data.adj": b"",
            "/usr/share/wordnet/data.adv": b"",
        },
    )
    body = b"thinko\n /thing'koh/, n.\n\n    A momentary glitch in mental processing.\n\n"
    _install(
        r,
        "dict-jargon",
        "4.4.7-3.1",
        {
            "/usr/share/dictd/jargon.dict": body,
            "/usr/share/dictd/jargon.index": f"thinko\tA\t{_b64(len(body))}\n".encode(),
        },
    )
    return r


def _b64(n: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    out = ""
    while True:
        out = alphabet[n % 64] + out
        n //= 64
        if n == 0:
            return out


def _records(out: Path) -> dict[str, list[dict]]:
    return {
        s: [json.loads(line) for line in (out / f"{s}.jsonl").read_text().splitlines()]
        for s in SPLITS
    }


def test_package_lookup(root: Path) -> None:
    files = package_files("wordnet-base", root)
    assert files is not None and root / "usr/share/wordnet/data.noun" in files
    assert package_files("dict-gcide", root) is None
    assert package_version("dict-jargon", root) == "4.4.7-3.1"
    assert [s.name for s in resolve_sources(["dict-jargon", "wordnet"])] == ["jargon", "wordnet"]
    with pytest.raises(ValueError, match="unknown corpus source"):
        resolve_sources(["nope"])
    assert "wordnet-base" in all_packages() and "man-db" in all_packages()


def test_build_splits_report_and_determinism(root: Path, tmp_path: Path) -> None:
    out1, out2 = tmp_path / "a", tmp_path / "b"
    report = build_corpus(out1, ["wordnet", "jargon"], min_docs=10, root=root)
    build_corpus(out2, ["wordnet", "jargon"], min_docs=10, root=root)
    for name in [*(f"{s}.jsonl" for s in SPLITS), "report.json"]:
        assert (out1 / name).read_bytes() == (out2 / name).read_bytes(), name
    assert not list(out1.glob(".*"))  # no temp files left behind

    recs = _records(out1)
    ids = {s: [r["id"] for r in rs] for s, rs in recs.items()}
    all_ids = [i for s in SPLITS for i in ids[s]]
    assert len(all_ids) == len(set(all_ids)) == N_SYNSETS + 1
    assert not set(ids["pretrain"]) & set(ids["finetune"])
    assert not set(ids["pretrain"]) & set(ids["eval"])
    assert not set(ids["finetune"]) & set(ids["eval"])
    assert len(ids["pretrain"]) > len(ids["finetune"]) > 0 and len(ids["eval"]) > 0
    for split, rs in recs.items():
        assert [(r["source"], r["id"]) for r in rs] == sorted((r["source"], r["id"]) for r in rs)
        for r in rs:
            assert list(r) == ["id", "source", "split", "title", "text", "meta"]
            assert r["split"] == split == split_of(r["id"])
    thinko = next(r for rs in recs.values() for r in rs if r["id"] == "jargon:thinko")
    assert thinko["text"] == "A momentary glitch in mental processing."
    assert thinko["meta"]["pos"] == "n."

    on_disk = json.loads((out1 / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    wn = report["sources"]["wordnet"]
    assert wn["docs"] == N_SYNSETS
    assert wn["packages"] == {"wordnet-base": "1:3.0-37"}
    assert wn["dropped_short"] == 0 and wn["renamed_duplicate_ids"] == 0
    assert sum(wn["split_docs"].values()) == N_SYNSETS
    assert wn["tokens"] == sum(
        len(r["text"].split()) for rs in recs.values() for r in rs if r["source"] == "wordnet"
    )
    assert wn["length_tokens"]["min"] <= wn["length_tokens"]["median"] <= wn["length_tokens"]["max"]
    assert report["total"]["docs"] == N_SYNSETS + 1
    assert {s: len(ids[s]) for s in SPLITS} == report["total"]["split_docs"]


def test_package_list_file_matches_sources() -> None:
    listed = Path(__file__).resolve().parents[3] / "scripts" / "corpus_packages.txt"
    assert listed.read_text().split() == all_packages()


def test_jsonl_lines_survive_splitlines() -> None:
    from diffembed.data.corpus.build import _dumps

    line = _dumps({"text": "a\u2028b\x85c"})
    assert line.splitlines() == [line]
    assert json.loads(line)["text"] == "a\u2028b\x85c"


def test_split_of_is_deterministic_and_respects_fractions() -> None:
    ids = [f"doc:{i}" for i in range(20000)]
    first = [split_of(i) for i in ids]
    assert first == [split_of(i) for i in ids]
    for name, frac in zip(SPLITS, (0.8, 0.1, 0.1), strict=True):
        assert abs(first.count(name) / len(ids) - frac) < 0.01
    halves = [split_of(i, (0.5, 0.25, 0.25)) for i in ids]
    assert abs(halves.count("pretrain") / len(ids) - 0.5) < 0.015
    salted = [split_of(i, salt="other") for i in ids]
    assert salted != first
    assert all(split_of(i, (0, 0, 1)) == "eval" for i in ids[:100])


def test_bad_fractions(root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fractions"):
        build_corpus(tmp_path / "x", ["wordnet"], fractions=(0.5, 0.2, 0.2), root=root)


def test_missing_package_is_skipped_with_warning(
    root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        report = build_corpus(tmp_path / "o", ["wordnet", "gcide"], min_docs=1, root=root)
    assert "dict-gcide" in caplog.text and "gcide" in report["skipped"]
    assert "dict-gcide" in report["skipped"]["gcide"]
    assert report["sources"]["wordnet"]["docs"] == N_SYNSETS


def test_too_small_corpus_is_an_error_and_nothing_is_replaced(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "pretrain.jsonl").write_text("old\n")
    with pytest.raises(CorpusTooSmallError, match=r"fewer than the required minimum 100000"):
        build_corpus(out, ["wordnet", "jargon"], min_docs=100_000, root=root)
    assert (out / "pretrain.jsonl").read_text() == "old\n"
    assert sorted(p.name for p in out.iterdir()) == ["pretrain.jsonl"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffembed")
    sub = parser.add_subparsers(dest="command", required=True)
    add_corpus_parser(sub)
    return parser


def test_cli_build_and_help(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = _parser()
    out = tmp_path / "cli"
    args = parser.parse_args(
        [
            "corpus",
            "build",
            "--out",
            str(out),
            "--sources",
            "wordnet,jargon",
            "--min-docs",
            "5",
            "--fractions",
            "0.6,0.2,0.2",
            "--root",
            str(root),
        ]
    )
    assert args.sources == ["wordnet", "jargon"] and args.fractions == [0.6, 0.2, 0.2]
    assert args.func(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["splits"]["fractions"] == {"pretrain": 0.6, "finetune": 0.2, "eval": 0.2}

    bad = parser.parse_args(
        ["corpus", "build", "--out", str(out), "--min-docs", "999999", "--root", str(root)]
    )
    with pytest.raises(SystemExit, match="fewer than the required minimum"):
        bad.func(bad)

    listing = parser.parse_args(["corpus", "sources", "--root", str(root)])
    assert listing.func(listing) == 0
    shown = capsys.readouterr().out
    assert "wordnet" in shown and "dict-gcide (missing)" in shown

    # every option of every corpus sub-verb has help text
    corpus = next(
        a
        for a in parser._subparsers._group_actions[0].choices.values()
        if a.prog.endswith("corpus")
    )
    verbs = corpus._subparsers._group_actions[0].choices
    assert set(verbs) == {"build", "sources"}
    for verb in verbs.values():
        for action in verb._actions:
            assert action.help, f"{verb.prog} {action.option_strings} has no help"
