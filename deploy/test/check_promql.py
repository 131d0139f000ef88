#!/usr/bin/env python3
"""Evaluate every PromQL expression of the dashboards and the alert rules through a running
Prometheus's HTTP API (/api/v1/query) and require data.

Usage: check_promql.py --url http://127.0.0.1:PORT --cluster NAME [--ap-cluster NAME]
                       --rules rules.yml DASH.json...

- Dashboard queries: Grafana variables are substituted first: $cluster -> --cluster, every
  multi-value variable ($instance, $protocol) -> .* (Grafana's "All"), $__rate_interval -> 1m,
  $__interval -> 15s, $__range -> 5m. Template-variable queries label_values(SELECTOR, LABEL)
  are checked by evaluating SELECTOR and requiring LABEL on the result. A query that reads an
  AP-backend metric (roster_ap_*) gets $cluster -> --ap-cluster instead (a second, AP cluster
  scraped by the same Prometheus), since a CP cluster has no such series.
- Alert rules: an alert expression is `QUERY OP THRESHOLD` with one top-level comparison (outside
  parentheses, braces, brackets and strings). The comparison is stripped and QUERY must return
  data; if THRESHOLD is itself a query (not a number) it must return data too. (The full
  expression normally returns nothing on a healthy cluster: it only has results while the alert
  condition holds.) The rules' health in /api/v1/rules must be "ok" (no evaluation error).
Prints one line per expression, then `counts: P F`.
"""
import argparse
import json
import re
import sys
import urllib.parse
import urllib.request

import yaml

CMP = ["==", "!=", ">=", "<=", ">", "<"]


def split_comparison(expr):
    """Return (lhs, op, rhs) at the last top-level comparison, or (expr, None, None)."""
    depth, quote, last, i = 0, None, None, 0
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"'`":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0:
            for op in CMP:
                if expr.startswith(op, i) and not expr.startswith("=~", i) and not expr.startswith("!~", i):
                    last = (i, op)
                    i += len(op) - 1
                    break
        i += 1
    if not last:
        return expr, None, None
    i, op = last
    rhs = expr[i + len(op):].strip()
    if rhs.startswith("bool "):
        rhs = rhs[5:].strip()
    if re.match(r"^(on|ignoring|group_left|group_right)\b", rhs):
        raise ValueError("vector matching on the final comparison is not supported by this check")
    return expr[:i].strip(), op, rhs


def is_number(s):
    try:
        float(s)
        return True
    except ValueError:
        return False


class Prom:
    def __init__(self, url):
        self.url = url.rstrip("/")

    def get(self, path, **params):
        u = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(u, timeout=15) as r:
            return json.load(r)

    def query(self, expr):
        try:
            d = self.get("/api/v1/query", query=expr)
        except urllib.error.HTTPError as e:
            return None, json.load(e).get("error", str(e))
        if d.get("status") != "success":
            return None, d.get("error")
        res = d["data"]["result"]
        if d["data"]["resultType"] == "scalar":
            res = [{"metric": {}, "value": res}]
        return res, None


passed = failed = 0


def report(ok, source, expr, note=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
    one = " ".join(expr.split())
    print("%s %s: %s%s" % ("ok  " if ok else "FAIL", source, one if len(one) < 150 else one[:147] + "...",
                           (" -- " + note) if note else ""))


def evaluate(prom, source, expr, need_label=None):
    res, err = prom.query(expr)
    if err:
        report(False, source, expr, "error: %s" % err)
    elif not res:
        report(False, source, expr, "no data")
    elif need_label and not any(need_label in r["metric"] for r in res):
        report(False, source, expr, "no series has label %s" % need_label)
    else:
        nan = all(r["value"][1] in ("NaN", "+Inf", "-Inf") for r in res)
        report(True, source, expr, "%d series%s" % (len(res), ", all NaN (no events in the window)" if nan else ""))


def substitute(expr, cluster, multi):
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "15s").replace("$__range", "5m")
    for v in multi:
        expr = re.sub(r"\$\{?%s\}?" % v, ".*", expr)
    return re.sub(r"\$\{?cluster\}?", cluster, expr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--cluster", required=True)
    ap.add_argument("--ap-cluster", help="the cluster label of an AP-backend cluster, for roster_ap_* queries")
    ap.add_argument("--rules", action="append", default=[])
    ap.add_argument("dashboards", nargs="*")
    a = ap.parse_args()
    prom = Prom(a.url)

    for f in a.dashboards:
        d = json.load(open(f))
        name = f.rsplit("/", 1)[-1]
        tvars = d["templating"]["list"]
        multi = [v["name"] for v in tvars if v.get("includeAll") or v.get("multi")]
        for v in tvars:
            if v["type"] != "query":
                continue
            m = re.match(r"^label_values\((.*),\s*(\w+)\)$", v["definition"])
            if not m:
                report(False, "%s var %s" % (name, v["name"]), v["definition"], "not label_values(SELECTOR, LABEL)")
                continue
            evaluate(prom, "%s var %s" % (name, v["name"]), substitute(m.group(1), a.cluster, multi), m.group(2))
        panels = d["panels"] + [p for r in d["panels"] for p in r.get("panels", [])]
        for p in panels:
            for t in p.get("targets", []):
                cluster = a.ap_cluster if a.ap_cluster and "roster_ap_" in t["expr"] else a.cluster
                evaluate(prom, "%s panel %d %s/%s" % (name, p["id"], p["title"], t["refId"]),
                         substitute(t["expr"], cluster, multi))

    names = set()
    for f in a.rules:
        for g in yaml.safe_load(open(f))["groups"]:
            for r in g["rules"]:
                label = r.get("alert") or r.get("record")
                names.add(label)
                try:
                    lhs, op, rhs = split_comparison(r["expr"])
                except ValueError as e:
                    report(False, "rule %s" % label, r["expr"], str(e))
                    continue
                if r.get("alert") and op is None:
                    report(False, "rule %s" % label, r["expr"], "an alert needs one top-level comparison")
                    continue
                evaluate(prom, "rule %s%s" % (label, " (without %s %s)" % (op, rhs) if op and is_number(rhs) else " (left of %s)" % op if op else ""), lhs)
                if op and not is_number(rhs):
                    evaluate(prom, "rule %s (right of %s)" % (label, op), rhs)
    if names:
        rules = [r for g in prom.get("/api/v1/rules")["data"]["groups"] for r in g["rules"]]
        loaded = {r["name"] for r in rules}
        missing = names - loaded
        report(not missing, "rules loaded", "/api/v1/rules", "missing: %s" % sorted(missing) if missing else "%d rules" % len(rules))
        for r in rules:
            ok = r.get("health") == "ok"
            report(ok, "rule health %s" % r["name"], "/api/v1/rules", r.get("lastError") or r.get("health"))
        # On the healthy cluster under load no critical alert may be pending or firing: this catches
        # an inverted or mis-scaled critical condition (e.g. the quorum arithmetic).
        for r in rules:
            if r.get("type") == "alerting" and r.get("labels", {}).get("severity") == "critical":
                report(r.get("state") == "inactive", "critical alert inactive on a healthy cluster: %s" % r["name"],
                       "/api/v1/rules", r.get("state"))
    print("counts: %d %d" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
