"""Job parameters published as JSON, and kwargs checked against them (no job code)."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

import pytest
from pydantic import BaseModel

from jobrunner.errors import InvalidArguments
from jobrunner.signature import check_kwargs, parameters_of, signature_text


class Address(TypedDict):
    city: str
    zip: int


class Order(BaseModel):
    id: int
    note: str = ""


def job(
    ctx: Any,
    user_id: int,
    ratio: float = 1.0,
    name: str | None = None,
    tags: list[str] | None = None,
    mode: Literal["fast", "slow"] = "fast",
    options: dict[str, bool] | None = None,
    address: Address | None = None,
    order: Order | None = None,
    blob: Any = None,
) -> None:
    pass


def open_job(region: str, **extra: Any) -> None:
    pass


PARAMS = parameters_of(job)


def test_parameters_are_described_without_ctx() -> None:
    names = [p["name"] for p in PARAMS]
    assert names[0] == "user_id" and "ctx" not in names
    assert PARAMS[0] == {"name": "user_id", "required": True, "schema": {"type": "integer"}}
    assert PARAMS[1]["default"] == 1.0 and not PARAMS[1]["required"]
    assert signature_text("job", PARAMS).startswith(
        "job(user_id: integer, ratio: number = 1.0, name: string or null = null"
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"user_id": 7},
        {"user_id": 7, "ratio": 2, "name": None, "tags": ["a"], "mode": "slow"},
        {"user_id": 7, "options": {"x": True}, "address": {"city": "B", "zip": 1}},
        {"user_id": 7, "order": {"id": 3}, "blob": [1, {"a": None}]},
    ],
)
def test_fitting_kwargs_pass(kwargs: dict[str, Any]) -> None:
    check_kwargs("job", PARAMS, kwargs)


@pytest.mark.parametrize(
    ("kwargs", "said"),
    [
        ({}, "needs the parameter 'user_id' (integer)"),
        ({"user_id": 7, "usr_id": 1}, "no parameter 'usr_id': did you mean 'user_id'?"),
        ({"user_id": "7"}, "parameter 'user_id' must be integer, got \"7\""),
        ({"user_id": True}, "must be integer"),
        ({"user_id": 1.5}, "must be integer"),
        ({"user_id": 1, "ratio": "x"}, "'ratio' must be number"),
        ({"user_id": 1, "tags": [1]}, "'tags' must be list of string or null"),
        ({"user_id": 1, "mode": "medium"}, 'one of "fast", "slow"'),
        ({"user_id": 1, "options": {"x": 1}}, "'options' must be object"),
        ({"user_id": 1, "address": {"city": "B"}}, "'address'"),
    ],
)
def test_kwargs_that_do_not_fit_are_refused_naming_the_parameter(
    kwargs: dict[str, Any], said: str
) -> None:
    with pytest.raises(InvalidArguments) as info:
        check_kwargs("job", PARAMS, kwargs)
    assert said in str(info.value)


def test_a_function_with_var_keyword_takes_any_other_name() -> None:
    params = parameters_of(open_job)
    check_kwargs("open", params, {"region": "eu", "anything": 1})
    with pytest.raises(InvalidArguments, match="needs the parameter 'region'"):
        check_kwargs("open", params, {"anything": 1})
    assert signature_text("open", params) == "open(region: string, **kwargs)"
