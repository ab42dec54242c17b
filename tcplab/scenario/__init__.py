"""Scenario files: what to break and what must happen, and checking a run
against them.

:mod:`tcplab.scenario.spec` says what a file may hold (the field tables, and
the JSON Schema made from them); :mod:`tcplab.scenario.validate` checks
values against it, naming the line (:mod:`tcplab.scenario.locate`);
:mod:`tcplab.scenario.model` is the parsed :class:`Scenario` and
``parse``/``load``/``find``; :mod:`tcplab.scenario.check` checks a finished
run against it."""

from tcplab.scenario.check import check
from tcplab.scenario.locate import locate
from tcplab.scenario.model import (
    CATALOGUE,
    Scenario,
    SegmentExpect,
    SideExpect,
    catalogue,
    find,
    load,
    parse,
)
from tcplab.scenario.spec import REQUIRED_TOP, SPEC, TOP, Field, json_schema
from tcplab.scenario.validate import ScenarioError

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
