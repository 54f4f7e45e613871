"""Fast checks of the pieces around the openai backend that need no server (the real-server tests are in
test_engine_openai.py): a refused row becomes a reject and the chunk keeps the others; a server that is not
there is one line naming it, never the key; bad options are refused before any request."""

import pytest
from servers.local_server import free_port

from sftadapt.data.records import Problem
from sftadapt.engines import EngineConfig, RequestRejected, make_engine
from sftadapt.engines.rejects import keep_going, record, reject_row, restore


def test_keep_going_drops_only_the_refused_items():
    calls = []

    def work(items):
        calls.append([p.id for p in items])
        if any(p.id == "b" for p in items):
            raise RequestRejected({0: "HTTP 400 context too long"}, "openai server")
        return [f"row-{p.id}" for p in items]

    items = [Problem(id=i, problem=f"p{i}", answer="1") for i in "abc"]
    rows, refused = keep_going(items, work)
    assert rows == ["row-a", "row-c"] and [(p.id, why) for p, why in refused] == [
        ("b", "openai server rejected request 0: HTTP 400 context too long")
    ]
    assert calls == [["a", "b", "c"], ["a"], ["b"], ["c"]]
    assert keep_going(items[1:2], work) == ([], [(items[1], refused[0][1])])


def test_engine_rejects_survive_a_rewritten_rejects_file(tmp_path):
    from sftadapt.data.sources import read_rejects, write_rejects

    rejects = tmp_path / "rejects.jsonl"
    row = reject_row(Problem(id="x", problem="long", answer="1"), "too long")
    record(tmp_path, 3, [row], rejects)
    assert read_rejects(rejects) == [row]
    write_rejects([], rejects)  # a resumed stage rewrites its rejects file from the loader's rejects
    assert restore(tmp_path, [3], rejects) == 1 and read_rejects(rejects) == [row]
    restore(tmp_path, [3], rejects)
    assert read_rejects(rejects) == [row]  # not added twice


def test_no_server_is_one_line_without_the_key(monkeypatch):
    monkeypatch.setenv("SFTADAPT_TEST_KEY", "sk-secret-xyz")
    port = free_port()
    with pytest.raises(ValueError) as err:
        make_engine(
            "tiny-random",
            EngineConfig(
                "openai",
                {
                    "base_urls": [f"http://127.0.0.1:{port}/v1"],
                    "api_key_env": "SFTADAPT_TEST_KEY",
                    "max_retries": 1,
                    "backoff": 0.01,
                },
            ),
        )
    msg = str(err.value)
    assert "\n" not in msg and f"127.0.0.1:{port}" in msg and "connection refused" in msg
    assert "sk-secret-xyz" not in msg


@pytest.mark.parametrize(
    "options, match",
    [
        ({}, "base_urls is required"),
        ({"base_urls": []}, "at least one server"),
        ({"base_urls": ["http://x/v1"], "concurrency": 0}, "concurrency"),
        ({"base_urls": ["http://x/v1"], "server": "tgi"}, "not one of"),
        ({"base_urls": ["http://x/v1"], "api_key_env": "SFTADAPT_SURELY_UNSET"}, "SFTADAPT_SURELY_UNSET is not set"),
        ({"base_urls": ["http://x/v1"], "temperature": 1}, "not openai options"),
    ],
)
def test_bad_options_are_refused_before_any_request(options, match):
    with pytest.raises(ValueError, match=match):
        make_engine(
            "tiny-random",
            EngineConfig(
                "openai",
                {**options, "check_model": False} if "base_urls" in options and options["base_urls"] else options,
            ),
        )
