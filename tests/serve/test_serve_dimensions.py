"""``dimensions`` of ``/v1/embeddings`` and ``encode --dimensions`` against the lengths a model
was trained for (issue 31): trained lengths are accepted quietly, others answered with a warning
(API: a ``warning`` field; CLI: a log line), lengths beyond the model refused."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from test_serve import TEXTS, ServerThread, request

from diffembed.cli.main import main
from diffembed.model.dimensions import dimensions_warning, truncate
from diffembed.model.embedder import Embedder
from diffembed.model.model_dir import write_trained_dims
from diffembed.serve.app import ServeConfig, create_app


@pytest.fixture(scope="module")
def matryoshka_dir(model_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("mrl") / "model"
    Embedder.load(model_dir, precision="fp32").save(path)
    write_trained_dims(path, [16, 32])
    return path


def test_warning_text():
    assert dimensions_warning(None, 64, []) is None and dimensions_warning(64, 64, []) is None
    assert dimensions_warning(16, 64, [16, 32]) is None
    assert "not a length this model was trained for (16, 32 or 64)" in dimensions_warning(
        24, 64, [16, 32]
    )
    assert "not trained for shorter vectors" in dimensions_warning(16, 64, [])
    cut = truncate(np.array([[3.0, 4.0, 12.0]]), 2)
    np.testing.assert_allclose(cut, [[0.6, 0.8]])


def test_api_warns_for_untrained_dimensions(matryoshka_dir):
    embedder = Embedder.load(matryoshka_dir, precision="fp32")
    app = create_app(embedder, ServeConfig(model_name="tiny"), trained_dims=[16, 32])
    with ServerThread(app) as s:
        status, _, trained = request(
            s.port, "POST", "/v1/embeddings", {"input": TEXTS, "dimensions": 16}
        )
        assert status == 200 and "warning" not in trained
        assert len(trained["data"][0]["embedding"]) == 16
        status, _, other = request(
            s.port, "POST", "/v1/embeddings", {"input": TEXTS, "dimensions": 24}
        )
        assert status == 200 and "dimensions=24 is not a length" in other["warning"]
        full = np.array([d["embedding"] for d in other["data"]])
        np.testing.assert_allclose(full, truncate(embedder.encode(TEXTS), 24), atol=1e-5)
        status, _, plain = request(s.port, "POST", "/v1/embeddings", {"input": TEXTS})
        assert "warning" not in plain
        status, _, models = request(s.port, "GET", "/v1/models")
        assert models["data"][0]["trained_dimensions"] == [16, 32, 64]


def test_encode_cli_dimensions(matryoshka_dir, model_dir, tmp_path, caplog, capsys):
    texts = tmp_path / "t.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    full = Embedder.load(model_dir, precision="fp32").encode(TEXTS)
    with caplog.at_level(logging.WARNING):
        assert (
            main(
                [
                    "encode",
                    "--model",
                    str(matryoshka_dir),
                    "--input",
                    str(texts),
                    "--output",
                    str(tmp_path / "a.npy"),
                    "--dimensions",
                    "32",
                    "--precision",
                    "fp32",
                    "--no-progress",
                ]
            )
            == 0
        )
    assert not [r for r in caplog.records if "--dimensions" in r.getMessage()]
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), truncate(full, 32), atol=1e-5)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert (
            main(
                [
                    "encode",
                    "--model",
                    str(model_dir),
                    "--input",
                    str(texts),
                    "--output",
                    str(tmp_path / "b.npy"),
                    "--dimensions",
                    "32",
                    "--precision",
                    "fp32",
                    "--no-progress",
                ]
            )
            == 0
        )
    assert any("not trained for shorter vectors" in r.getMessage() for r in caplog.records)
    assert np.load(tmp_path / "b.npy").shape == (4, 32)
    assert (
        main(
            [
                "encode",
                "--model",
                str(model_dir),
                "--input",
                str(texts),
                "--output",
                str(tmp_path / "c.npy"),
                "--dimensions",
                "65",
            ]
        )
        == 2
    )
    assert "--dimensions must be an integer between 1 and 64" in capsys.readouterr().err
    assert not (tmp_path / "c.npy").exists()
