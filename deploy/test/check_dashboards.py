#!/usr/bin/env python3
"""Structural check of the Grafana dashboards: a JSON Schema of the dashboard model subset we use
(written for Roster, draft 2020-12, checked with the `jsonschema` package) plus the rules a schema
cannot express: unique panel ids, every datasource reference is the dashboard's `${datasource}`
variable (type prometheus), every `$variable` used in a query is defined, panels do not overlap
and fit the 24-column grid, and uids are unique across files.

Usage: check_dashboards.py FILE.json...   Prints one line per check, then `counts: P F`.
"""
import json
import re
import sys

import jsonschema

DS_REF = {"type": "object", "required": ["type", "uid"],
          "properties": {"type": {"const": "prometheus"}, "uid": {"const": "${datasource}"}}}
GRID = {"type": "object", "required": ["h", "w", "x", "y"],
        "properties": {k: {"type": "integer", "minimum": 0} for k in "hwxy"},
        "additionalProperties": False}
TARGET = {"type": "object", "required": ["refId", "expr", "datasource"],
          "properties": {"refId": {"type": "string", "pattern": "^[A-Z]$"},
                         "expr": {"type": "string", "minLength": 1},
                         "legendFormat": {"type": "string"}, "datasource": DS_REF,
                         "range": {"type": "boolean"}, "instant": {"type": "boolean"}}}
PANEL = {
    "type": "object", "required": ["id", "type", "title", "gridPos"],
    "properties": {
        "id": {"type": "integer", "minimum": 1}, "title": {"type": "string", "minLength": 1},
        "type": {"enum": ["row", "timeseries", "stat", "state-timeline", "text", "gauge",
                          "table", "bargauge", "heatmap"]},
        "gridPos": GRID, "datasource": DS_REF, "description": {"type": "string"},
        "targets": {"type": "array", "items": TARGET},
        "fieldConfig": {"type": "object", "required": ["defaults", "overrides"],
                        "properties": {"defaults": {"type": "object"},
                                       "overrides": {"type": "array"}}},
        "options": {"type": "object"}, "panels": {"type": "array"},
        "collapsed": {"type": "boolean"},
    },
    "allOf": [
        {"if": {"properties": {"type": {"enum": ["row", "text"]}}},
         "then": {"not": {"required": ["targets"]}},
         "else": {"required": ["datasource", "targets", "fieldConfig"],
                  "properties": {"targets": {"minItems": 1}}}},
    ],
}
VARIABLE = {
    "type": "object", "required": ["name", "type"],
    "properties": {"name": {"type": "string", "pattern": "^[a-z_][a-z0-9_]*$"},
                   "type": {"enum": ["datasource", "query", "custom", "constant", "interval"]}},
    "allOf": [{"if": {"properties": {"type": {"const": "query"}}},
               "then": {"required": ["datasource", "query", "definition"],
                        "properties": {"datasource": DS_REF}}},
              {"if": {"properties": {"type": {"const": "datasource"}}},
               "then": {"properties": {"query": {"const": "prometheus"}}}}],
}
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "panels", "templating", "time", "tags"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "id": {"type": "null"},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "version": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "time": {"type": "object", "required": ["from", "to"]},
        "refresh": {"type": "string"},
        "panels": {"type": "array", "minItems": 1, "items": PANEL},
        "templating": {"type": "object", "required": ["list"],
                       "properties": {"list": {"type": "array", "items": VARIABLE}}},
        "annotations": {"type": "object"}, "links": {"type": "array"},
    },
}
BUILTIN = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s", "__range_ms"}

passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print("ok   %s" % name)
    else:
        failed += 1
        print("FAIL %s: %s" % (name, detail))


def main(files):
    uids = {}
    for f in files:
        try:
            d = json.load(open(f))
        except ValueError as e:
            check("%s: JSON" % f, False, e)
            continue
        errs = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(d), key=lambda e: list(e.path))
        check("%s: schema" % f, not errs,
              "; ".join("%s: %s" % ("/".join(map(str, e.path)), e.message) for e in errs[:5]))
        if errs:
            continue
        check("%s: uid unique across files" % f, d["uid"] not in uids, "also in %s" % uids.get(d["uid"]))
        uids[d["uid"]] = f
        panels = d["panels"] + [p for r in d["panels"] for p in r.get("panels", [])]
        ids = [p["id"] for p in panels]
        check("%s: panel ids unique" % f, len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1))
        names = {v["name"] for v in d["templating"]["list"]}
        check("%s: datasource variable" % f,
              any(v["name"] == "datasource" and v["type"] == "datasource" for v in d["templating"]["list"]))
        used = set()
        for p in panels:
            for t in p.get("targets", []):
                used |= set(re.findall(r"\$\{?(\w+)", t["expr"]))
            for t in p.get("targets", []):
                refs = [t2["refId"] for t2 in p["targets"]]
                if len(refs) != len(set(refs)):
                    check("%s: panel %d refIds unique" % (f, p["id"]), False, refs)
                    break
        for v in d["templating"]["list"]:
            if v["type"] == "query":
                used |= set(re.findall(r"\$\{?(\w+)", v["definition"]))
        undefined = used - names - BUILTIN
        check("%s: variables defined" % f, not undefined, sorted(undefined))
        cells = {}
        overlap = []
        for p in d["panels"]:
            g = p["gridPos"]
            if g["x"] + g["w"] > 24:
                overlap.append("panel %d wider than the grid" % p["id"])
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    if (x, y) in cells:
                        overlap.append("panels %d and %d" % (cells[(x, y)], p["id"]))
                    cells[(x, y)] = p["id"]
        check("%s: layout (no overlap, 24 columns)" % f, not overlap, sorted(set(overlap))[:5])
    print("counts: %d %d" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
