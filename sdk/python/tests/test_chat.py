"""LLM chat on a real grid: the SDK's chat calls, and the ``openai`` package pointed at the
coordinator. Needs the model file (see conftest.py); answers are greedy (temperature 0) and
short."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from runegrid import ApiError, ChatReply, ChatStream, Grid
from runegrid.local import LocalGrid

pytestmark = pytest.mark.chat

MODEL = "smollm2-135m-instruct"
QUESTION = "What is the capital of France? Answer in one sentence."
#: SmolLM2-135M-Instruct's greedy answer to QUESTION: 7 tokens.
ANSWER = "The capital of France is Paris."
SAMPLING: dict[str, Any] = {"max_tokens": 16, "temperature": 0}
#: Seconds an openai request may take.
OPENAI_TIMEOUT = 120.0


def test_models(chat_grid: Grid) -> None:
    models = {m.id: m for m in chat_grid.models()}
    m = models[MODEL]
    assert m.available
    assert m.workers >= 1
    assert "smollm2" in m.aliases
    assert m.blob is not None and len(m.blob) == 64
    assert m.tier == "small"
    assert m.memory_bytes is not None and m.memory_bytes <= 512 << 20


def test_generate_and_quorum(chat_grid: Grid) -> None:
    assert chat_grid.generate(QUESTION, **SAMPLING) == ANSWER

    reply = chat_grid.chat(QUESTION, replicas=2, agree=2, **SAMPLING)
    assert isinstance(reply, ChatReply)
    assert reply.verified
    assert reply.text == ANSWER
    assert reply.acceptance == "quorum"
    assert reply.finish_reason == "stop"
    assert reply.usage.completion_tokens == 7
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 7
    assert reply.attempts >= 2
    assert reply.job > 0 and reply.id == f"chatcmpl-{reply.job}"
    assert reply.digest is not None and len(reply.digest) == 64
    assert reply.model == MODEL
    assert not reply.corrected


def test_stream(chat_grid: Grid) -> None:
    messages = [{"role": "user", "content": QUESTION}]
    with chat_grid.chat(messages, stream=True, **SAMPLING) as stream:
        assert isinstance(stream, ChatStream)
        pieces = list(stream)
    assert len(pieces) >= 2
    # Replicas compute the same tokens: the streamed text is the verified answer.
    assert not stream.corrected, f"corrected: streamed {pieces!r}, verified {stream.text!r}"
    assert "".join(pieces) == stream.text == stream.reply.text == ANSWER
    assert stream.reply.verified
    assert stream.state == "verified"
    assert stream.job == stream.reply.job
    assert stream.reply.finish_reason == "stop"
    assert stream.reply.usage.completion_tokens == 7


@pytest.mark.anyio
async def test_stream_async(chat_grid: Grid) -> None:
    async with chat_grid as grid:
        assert MODEL in [m.id for m in await grid.models_async()]
        stream = await grid.generate_async(QUESTION, stream=True, **SAMPLING)
        pieces = [piece async for piece in stream]
    assert len(pieces) >= 2
    assert not stream.corrected, f"corrected: streamed {pieces!r}, verified {stream.text!r}"
    assert "".join(pieces) == stream.reply.text == ANSWER
    assert stream.reply.verified
    assert stream.reply.acceptance is not None


def test_unknown_model(chat_grid: Grid) -> None:
    with pytest.raises(ApiError) as e:
        chat_grid.chat(QUESTION, model="no-such-model", **SAMPLING)
    assert e.value.code == "model_not_found"
    assert e.value.status == 404
    with pytest.raises(ApiError) as e:
        list(chat_grid.chat(QUESTION, model="no-such-model", stream=True, **SAMPLING))
    assert e.value.code == "model_not_found"


# ---------------------------------------------------------------------- the openai package


@pytest.fixture
def openai_client(local: LocalGrid, chat_grid: Grid) -> Iterator[Any]:
    try:
        import openai
    except ImportError:
        if os.environ.get("RUNEGRID_REQUIRE_PYTHON"):
            pytest.fail("RUNEGRID_REQUIRE_PYTHON is set, but the openai package is missing")
        pytest.skip("the openai package is not installed (pip install './sdk/python[test]')")
    client = openai.OpenAI(
        base_url=f"{local.url}/v1", api_key=local.token, max_retries=0, timeout=OPENAI_TIMEOUT
    )
    try:
        yield client
    finally:
        client.close()


def test_openai(openai_client: Any) -> None:
    assert MODEL in [m.id for m in openai_client.models.list()]

    completion = openai_client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": QUESTION}],
        extra_body={"runegrid": {"replicas": 2, "agree": 2}},
        **SAMPLING,
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == ANSWER
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == 7
    info = (completion.model_extra or {})["runegrid"]
    assert info["state"] == "verified"
    assert info["acceptance"] == "quorum"
    assert info["attempts"] >= 2


def test_openai_stream(openai_client: Any) -> None:
    stream = openai_client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": QUESTION}], stream=True, **SAMPLING
    )
    pieces: list[str] = []
    states: list[str] = []
    finish = None
    for chunk in stream:
        if chunk.choices:
            if chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            finish = chunk.choices[0].finish_reason or finish
        info = (chunk.model_extra or {}).get("runegrid")
        if info:
            states.append(info["state"])
    assert len(pieces) >= 2
    assert "".join(pieces) == ANSWER, f"streamed {pieces!r}, states {states!r}"
    assert finish == "stop"
    assert states[0] == "running" and states[-1] == "verified"


def test_openai_errors(openai_client: Any) -> None:
    import openai

    with pytest.raises(openai.NotFoundError) as e:
        openai_client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": QUESTION}], **SAMPLING
        )
    assert e.value.status_code == 404
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        openai_client.chat.completions.create(model=MODEL, messages=[], **SAMPLING)
    assert bad.value.code == "invalid_request"
