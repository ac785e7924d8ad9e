"""The experiments file: schema, defaults and errors that name the file, experiment and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.abtest import load_experiments, model_references, parse_experiments
from recsys.exceptions import ConfigurationError

pytestmark = pytest.mark.abtest

EXAMPLE = Path(__file__).resolve().parents[3] / "experiments.example.yaml"


def _doc(*experiments: dict) -> dict:
    return {"experiments": list(experiments)}


def _exp(name: str = "e1", **fields: object) -> dict:
    return {
        "name": name,
        "variants": [{"name": "control"}, {"name": "pop", "policy": "popular"}],
    } | fields


def _error(raw: object) -> str:
    with pytest.raises(ConfigurationError) as info:
        parse_experiments(raw, "exp.yaml")
    return str(info.value)


def test_defaults_salt_weights_model_and_control() -> None:
    (exp,) = parse_experiments(_doc(_exp()), "exp.yaml")
    assert exp.salt == "e1"
    assert exp.control.name == "control"
    assert [v.model for v in exp.variants] == ["champion", "champion"]
    assert [v.policy for v in exp.variants] == [None, "popular"]
    assert exp.weights() == {"control": 0.5, "pop": 0.5}
    assert exp.start_s == float("-inf") and exp.end_s == float("inf")


def test_no_file_content_means_no_experiment() -> None:
    assert parse_experiments(None) == ()
    assert parse_experiments({"experiments": []}) == ()


def test_the_example_file_is_valid(tmp_path: Path) -> None:
    experiments = load_experiments(EXAMPLE)
    assert experiments, "the example declares an experiment"
    assert model_references(experiments) == set()  # runs on a local bundle (make demo)


@pytest.mark.parametrize(
    ("variants", "where", "what"),
    [
        (
            [{"name": "a", "weight": -1}, {"name": "b"}],
            "variants[0].weight",
            "greater than or equal to 0",
        ),
        (
            [{"name": "a", "weight": 0}, {"name": "b", "weight": 0}],
            "experiment 'e1'",
            "weights must add up",
        ),
        (
            [{"name": "a"}, {"name": "b", "policy": "bestseller"}],
            "variants[1].policy",
            "'bestseller'",
        ),
        (
            [{"name": "a"}, {"name": "b", "model": "latest"}],
            "variants[1].model",
            "'latest' is not a model",
        ),
        ([{"name": "a"}, {"name": "a"}], "experiment 'e1'", "a repeat"),
        ([{"name": "a"}], "experiment 'e1': variants", "at least 2"),
        ([{"name": "a"}, {"name": "b", "colour": "red"}], "variants[1].colour", "Extra inputs"),
        ([{"name": "a b"}, {"name": "b"}], "variants[0].name", "should match pattern"),
    ],
)
def test_invalid_variants_are_named(variants: list, where: str, what: str) -> None:
    message = _error(_doc({"name": "e1", "variants": variants}))
    assert message.startswith("exp.yaml: experiment 'e1'"), message
    assert where in message and what in message, message


def test_versions_and_aliases_are_model_references() -> None:
    exp = _exp(
        variants=[{"name": "a"}, {"name": "b", "model": "challenger"}, {"name": "c", "model": 7}]
    )
    (parsed,) = parse_experiments(_doc(exp))
    assert [v.model for v in parsed.variants] == ["champion", "challenger", "7"]
    assert model_references([parsed]) == {"challenger", "7"}


def test_overlapping_experiments_are_refused() -> None:
    first = _exp("e1", start="2026-01-01T00:00:00Z", end="2026-02-01T00:00:00Z")
    second = _exp("e2", start="2026-01-15T00:00:00Z")
    message = _error(_doc(first, second))
    assert "exp.yaml: experiments 'e1' and 'e2' overlap in time" in message
    # back to back is fine
    after = _exp("e2", start="2026-02-01T00:00:00Z")
    assert len(parse_experiments(_doc(first, after))) == 2


def test_names_and_salts_are_unique_and_end_follows_start() -> None:
    assert "same name 'e1'" in _error(
        _doc(_exp("e1", end="2020-01-01"), _exp("e1", start="2021-01-01"))
    )
    same_salt = _doc(
        _exp("e1", salt="s", end="2020-01-01"), _exp("e2", salt="s", start="2021-01-01")
    )
    assert "same salt 's'" in _error(same_salt)
    assert "end 2026-01-01T00:00:00+00:00 is not after start" in _error(
        _doc(_exp(start="2026-01-02", end="2026-01-01"))
    )


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read the experiments file"):
        load_experiments(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("experiments: [\n")
    with pytest.raises(ConfigurationError, match=r"broken\.yaml: not valid YAML"):
        load_experiments(broken)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("experiment:\n  - name: x\n")
    with pytest.raises(ConfigurationError, match=r"wrong\.yaml: experiment: Extra inputs"):
        load_experiments(wrong)
