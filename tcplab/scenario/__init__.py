"""Scenario files (:mod:`tcplab.scenario.spec`: what to break and what must
happen, validated, with the JSON Schema made from the same description) and
checking a run against them (:mod:`tcplab.scenario.check`)."""

from tcplab.scenario.check import check
from tcplab.scenario.spec import (
    CATALOGUE,
    REQUIRED_TOP,
    SPEC,
    TOP,
    Field,
    Scenario,
    ScenarioError,
    SegmentExpect,
    SideExpect,
    catalogue,
    find,
    json_schema,
    load,
    locate,
    parse,
)

__all__ = [
    "CATALOGUE",
    "REQUIRED_TOP",
    "SPEC",
    "TOP",
    "Field",
    "Scenario",
    "ScenarioError",
    "SegmentExpect",
    "SideExpect",
    "catalogue",
    "check",
    "find",
    "json_schema",
    "load",
    "locate",
    "parse",
]
