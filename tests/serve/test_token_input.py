"""``/v1/embeddings`` takes ``input`` as token ids of the served model's tokenizer (what
LangChain's ``OpenAIEmbeddings`` sends by default): a list of ids, or a list of id lists."""

from __future__ import annotations

import numpy as np
import openai
import pytest
from test_serve import ServerThread, assert_error, request

from diffembed.model.embedder import Embedder
from diffembed.serve.app import ServeConfig, create_app

TEXTS = ["A dictionary defines words.", "fox", "Retrieval finds the relevant documents."]


@pytest.fixture(scope="module")
def embedder(model_dir) -> Embedder:
    return Embedder.load(model_dir)


@pytest.fixture(scope="module")
def server(embedder):
    config = ServeConfig(model_name="tiny", max_inputs=8)
    with ServerThread(create_app(embedder, config)) as s:
        yield s


def vectors(body) -> np.ndarray:
    return np.array([d["embedding"] for d in body["data"]], dtype=np.float32)


def test_token_id_lists_embed_like_their_texts(server, embedder):
    tok = embedder.tokenizer
    ids = [tok(t)["input_ids"] for t in TEXTS]  # with the tokenizer's special tokens
    status, _, body = request(server.port, "POST", "/v1/embeddings", {"input": ids})
    assert status == 200, body
    np.testing.assert_allclose(vectors(body), embedder.encode(TEXTS), atol=1e-5)
    assert body["usage"]["prompt_tokens"] == sum(len(x) for x in ids)

    plain = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    status, _, body = request(server.port, "POST", "/v1/embeddings", {"input": plain[0]})
    assert status == 200, body
    np.testing.assert_allclose(vectors(body), embedder.encode(TEXTS[:1]), atol=1e-5)

    status, _, body = request(
        server.port, "POST", "/v1/embeddings", {"input": plain, "prompt_name": "query"}
    )
    assert status == 200, body
    np.testing.assert_allclose(
        vectors(body), embedder.encode(TEXTS, prompt_name="query"), atol=1e-5
    )


def test_openai_client_token_arrays(server, embedder):
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="x")
    ids = [embedder.tokenizer(t)["input_ids"] for t in TEXTS]
    got = client.embeddings.create(model="tiny", input=ids, encoding_format="float")
    out = np.array([d.embedding for d in got.data], dtype=np.float32)
    np.testing.assert_allclose(out, embedder.encode(TEXTS), atol=1e-5)


BAD_TOKENS = [
    ({"input": [5, 10**6]}, "input[1]: token id 1000000 is not in the model's vocabulary"),
    ({"input": [[5, 6], [7, -1]]}, "input[1][1]: token id -1 is not in the model's vocabulary"),
    ({"input": [[5, 6], []]}, "input[1] is an empty token list"),
    ({"input": [[5], [6]] * 5}, "at most 8"),
    # only special tokens (pad; bos, eos, mask): no text (issue 26: "input[0] is empty")
    ({"input": [0]}, "input: the token ids decode to no text (only special tokens such as"),
    ({"input": [[5], [1, 2, 3]]}, "input[1]: the token ids decode to no text"),
    ({"input": [1, "a"]}, "a list of token ids"),
    ({"input": [[1], ["a"]]}, "a list of token ids"),
    ({"input": [1.5]}, "a list of token ids"),
    ({"input": [True]}, "a list of token ids"),
]


@pytest.mark.parametrize("body,match", BAD_TOKENS, ids=range(len(BAD_TOKENS)))
def test_bad_token_input_is_a_clear_400(server, body, match):
    err = assert_error(request(server.port, "POST", "/v1/embeddings", body), 400, match)
    if match.startswith("input"):  # the message starts with the param it names
        assert err["param"] == match.split(":")[0].split(" ")[0]
