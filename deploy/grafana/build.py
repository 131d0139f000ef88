#!/usr/bin/env python3
"""Generate the Roster Grafana dashboards (deploy/grafana/dashboards/*.json).

The JSON files are committed (Grafana provisioning reads them as they are); this script is their
source. Edit it, run `python3 deploy/grafana/build.py`, commit both. `--check` exits non-zero if a
committed file differs from what the script generates (deploy/test-observability.sh runs it).

Every query uses only metrics the server exports today (docs/metrics.md) and the template
variables $cluster (single value), $instance and $protocol (multi, "All" = .*), plus Grafana's
$__rate_interval and $__range.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "dashboards")
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'cluster="$cluster", instance=~"$instance"'  # the usual label selector
CL = 'cluster="$cluster"'
RI = "$__rate_interval"
LEADER = '(roster_backend_role{%s, role="leader"} == 1)' % CL


class Board:
    def __init__(self, uid, title, description, extra_vars=()):
        self.uid, self.title, self.description = uid, title, description
        self.panels, self.next_id, self.x, self.y, self.row_h = [], 1, 0, 0, 0
        self.extra_vars = list(extra_vars)

    def _id(self):
        i = self.next_id
        self.next_id += 1
        return i

    def row(self, title):
        if self.x:
            self.y += self.row_h
            self.x, self.row_h = 0, 0
        self.panels.append({"id": self._id(), "type": "row", "title": title, "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def _place(self, w, h):
        if self.x + w > 24:
            self.y += self.row_h
            self.x, self.row_h = 0, 0
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def panel(self, kind, title, targets, unit="short", w=8, h=8, description="", options=None,
              field=None, mappings=None):
        tg = []
        for n, t in enumerate(targets):
            expr, legend = t if isinstance(t, tuple) else (t, "")
            tg.append({"refId": chr(ord("A") + n), "datasource": DS, "expr": expr,
                       "legendFormat": legend or "__auto", "range": True,
                       "instant": kind in ("stat",)})
        defaults = {"unit": unit}
        if mappings:
            defaults["mappings"] = mappings
        if field:
            defaults.update(field)
        p = {"id": self._id(), "type": kind, "title": title, "description": description,
             "datasource": DS, "gridPos": self._place(w, h), "targets": tg,
             "fieldConfig": {"defaults": defaults, "overrides": []}, "options": options or {}}
        if kind == "timeseries":
            p["options"] = options or {"legend": {"displayMode": "list", "placement": "bottom",
                                                  "showLegend": True},
                                       "tooltip": {"mode": "multi", "sort": "desc"}}
        self.panels.append(p)

    def text(self, title, content, w=24, h=4):
        self.panels.append({"id": self._id(), "type": "text", "title": title,
                            "gridPos": self._place(w, h),
                            "options": {"mode": "markdown", "content": content}})

    def stat(self, title, expr, unit="short", legend="", w=4, h=4, text_mode="auto",
             description="", mappings=None):
        self.panel("stat", title, [(expr, legend)], unit=unit, w=w, h=h, description=description,
                   mappings=mappings,
                   options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                              "values": False},
                            "textMode": text_mode, "colorMode": "value", "graphMode": "none",
                            "orientation": "auto", "justifyMode": "auto"})

    def json(self):
        var_ds = {"name": "datasource", "label": "Data source", "type": "datasource",
                  "query": "prometheus", "current": {}, "hide": 0, "refresh": 1,
                  "options": [], "regex": "", "includeAll": False, "multi": False}

        def qvar(name, label, query, include_all, multi):
            v = {"name": name, "label": label, "type": "query", "datasource": DS,
                 "definition": query, "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1},
                 "refresh": 2, "sort": 1, "hide": 0, "regex": "", "current": {}, "options": [],
                 "includeAll": include_all, "multi": multi}
            if include_all:
                v["allValue"] = ".*"
            return v

        tvars = [var_ds,
                 qvar("cluster", "Cluster", "label_values(roster_backend_role, cluster)", False, False),
                 qvar("instance", "Member", 'label_values(roster_backend_role{cluster="$cluster"}, instance)', True, True)]
        for name, label, query in self.extra_vars:
            tvars.append(qvar(name, label, query, True, True))
        return {
            "uid": self.uid, "title": self.title, "description": self.description,
            "tags": ["roster"], "editable": True, "graphTooltip": 1, "id": None,
            "schemaVersion": 39, "version": 1, "refresh": "10s", "timezone": "browser",
            "time": {"from": "now-1h", "to": "now"}, "timepicker": {},
            "fiscalYearStartMonth": 0, "liveNow": False, "weekStart": "",
            "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                      "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                      "name": "Annotations & Alerts", "type": "dashboard"}]},
            "links": [{"title": "Roster dashboards", "type": "dashboards", "tags": ["roster"],
                       "asDropdown": True, "includeVars": True, "keepTime": True}],
            "templating": {"list": tvars},
            "panels": self.panels,
        }


def q(p, h, by="instance"):
    """histogram_quantile of a _seconds histogram, by a label."""
    return 'histogram_quantile(%s, sum by (%s, le) (rate(%s_bucket{%s}[%s])))' % (p, by, h, SEL, RI)


def overview():
    b = Board("roster-overview", "Roster / Cluster overview",
              "Members, roles, elections, replication progress and storage latency of one Roster cluster.")
    b.row("Members")
    b.stat("Members up", 'sum(up{job="roster", %s})' % CL, description="Scrape targets of this cluster that answer.")
    b.stat("Members configured", 'count(up{job="roster", %s})' % CL, description="Scrape targets of this cluster.")
    b.stat("Leader", 'max by (instance) (roster_backend_role{%s, role=~"leader|standalone"} == 1)' % CL,
           legend="{{instance}}", text_mode="name", w=8,
           description="The member that is leader (or standalone). Empty: no leader.")
    b.stat("Voters in sync", 'max(roster_backend_synced_followers{%s}) + 1' % CL, w=2,
           description="The leader plus the voting followers it has in sync. A quorum of the voters must be in sync for writes.")
    b.stat("Voters", 'max(roster_backend_voters{%s})' % CL, w=2,
           description="Voting members configured (observers and learners excluded; 0 on the AP backend, which has no quorum).")
    b.stat("Epoch / term", 'max(roster_backend_epoch{%s})' % CL, w=2)
    b.stat("Elections in range", 'max(increase(roster_backend_elections_total{%s}[$__range]))' % CL, w=2,
           description="Most elections any member went through in the selected time range.")
    roles = [("standalone", 5), ("leader", 4), ("follower", 3), ("observer", 2), ("looking", 1)]
    role_expr = " + ".join('sum by (instance) (roster_backend_role{%s, role="%s"}) * %d' % (SEL, r, n)
                           for r, n in roles)
    b.panel("state-timeline", "Role", [(role_expr, "{{instance}}")], w=12,
            mappings=[{"type": "value", "options": {str(n): {"text": r, "index": i}}}
                      for i, (r, n) in enumerate(roles)] +
            [{"type": "value", "options": {"0": {"text": "unknown", "index": 5}}}],
            options={"showValue": "auto", "mergeValues": True, "rowHeight": 0.9,
                     "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom"},
                     "tooltip": {"mode": "single", "sort": "none"}},
            description="Each member's role over time (leader, follower, observer, looking = electing, standalone).")
    b.panel("timeseries", "Ready",
            [('max by (instance) (roster_backend_ready{%s})' % SEL, "{{instance}}")],
            w=12, field={"min": 0, "max": 1},
            description="1 when the member serves clients (/readyz).")
    b.panel("timeseries", "Elections", [('sum by (instance) (increase(roster_backend_elections_total{%s}[%s]))' % (SEL, RI), "{{instance}}")],
            description="Leader elections each member went through (zab: elections entered; raft: leader changes seen).")
    b.panel("timeseries", "Election duration (p99, zab)", [(q(0.99, "roster_zab_election_seconds"), "{{instance}}")], unit="s",
            description="From LOOKING to serving again. Buckets end at 5 s.")
    b.panel("timeseries", "Epoch / term", [('roster_backend_epoch{%s}' % SEL, "{{instance}}")])

    b.row("Replication")
    b.panel("timeseries", "Committed zxid (counter part)",
            [('roster_backend_committed_zxid{%s} %% 4294967296' % SEL, "{{instance}}")],
            description="Low 32 bits of the last committed zxid each member knows (members apply on commit, so this is also the applied zxid): the transaction counter within the epoch or term.")
    b.panel("timeseries", "Applied behind the most advanced member",
            [('max by (cluster) (roster_backend_last_zxid{%s}) - on (cluster) group_right () roster_backend_last_zxid{%s}' % (CL, SEL), "{{instance}}")],
            description="zxids behind the member with the highest applied zxid (meaningful within one epoch or term).")
    b.panel("timeseries", "Follower lag (leader's view)",
            [('roster_zab_follower_lag_txns{%s} * on (instance) group_left () %s or roster_raft_replication_lag_entries{%s} * on (instance) group_left () %s' % (CL, LEADER, CL, LEADER), "server {{follower}}{{peer}}")],
            description="What each follower has not acknowledged, as the current leader sees it: proposals (zab) or log entries (raft).")
    b.panel("timeseries", "Applied transactions",
            [('sum by (instance) (rate(roster_backend_txns_total{%s}[%s]))' % (SEL, RI), "{{instance}}")], unit="ops")
    b.panel("timeseries", "Outstanding writes", [('roster_backend_outstanding{%s}' % SEL, "{{instance}}")],
            description="Writes prepared but not yet applied.")
    b.panel("timeseries", "Synced members (on the leader)",
            [('max(roster_backend_synced_followers{%s})' % CL, "voting followers"),
             ('max(roster_zab_synced_observers{%s})' % CL, "observers")])
    b.panel("timeseries", "Follower synchronisations",
            [('sum by (kind) (increase(roster_zab_syncs_total{%s}[%s]))' % (CL, RI), "{{kind}}")],
            description="DIFF, TRUNC (+DIFF) and SNAP synchronisations by the leader.")

    b.row("Storage")
    b.panel("timeseries", "fsync latency",
            [(q(0.5, "roster_storage_fsync_seconds"), "p50 {{instance}}"),
             (q(0.99, "roster_storage_fsync_seconds"), "p99 {{instance}}")], unit="s",
            description="One synced log write (a group commit).")
    b.panel("timeseries", "fsyncs",
            [('sum by (instance) (rate(roster_storage_fsync_seconds_count{%s}[%s]))' % (SEL, RI), "{{instance}}")], unit="ops")
    b.panel("timeseries", "Transactions per fsync (mean)",
            [('sum by (instance) (rate(roster_backend_commit_batch_txns_sum{%s}[%s])) / sum by (instance) (rate(roster_backend_commit_batch_txns_count{%s}[%s]))' % (SEL, RI, SEL, RI), "{{instance}}")],
            description="Group-commit batch size.")
    b.panel("timeseries", "Snapshot duration (p99)", [(q(0.99, "roster_backend_snapshot_seconds"), "{{instance}}")], unit="s")
    b.panel("timeseries", "Snapshots taken",
            [('sum by (instance) (increase(roster_backend_snapshot_seconds_count{%s}[%s]))' % (SEL, RI), "{{instance}}")])
    b.panel("timeseries", "Snapshot transfer",
            [('sum by (instance, dir) (rate(roster_backend_snapshot_bytes_total{%s}[%s]))' % (SEL, RI), "{{instance}} {{dir}}")],
            unit="Bps",
            description="Snapshot bytes sent to or received from other members (a member catching up, or wiped): the transfer's progress.")

    b.row("AP backend (gossip)")
    b.panel("timeseries", "Members by state (each member's view)",
            [('max by (instance, state) (roster_ap_members{%s})' % SEL, "{{instance}} {{state}}")],
            description="The failure detector's view on each member: alive, suspect (not heard from), dead (its ephemerals expire after the grace period).")
    b.panel("timeseries", "Convergence lag (p99)", [(q(0.99, "roster_ap_convergence_lag_seconds"), "{{instance}}")], unit="s",
            description="Age of a remote write (its HLC time) when it was applied here: how far replicas trail.")
    b.panel("timeseries", "Self-preservation",
            [('max by (instance) (roster_ap_self_preservation{%s})' % SEL, "{{instance}}")], field={"min": 0, "max": 1},
            description="1 while dead members' ephemerals are kept because too many would vanish at once (docs/ap.md).")
    return b


def protocols():
    b = Board("roster-protocols", "Roster / Protocols",
              "Client traffic: requests, results and latency by protocol and operation; connections, sessions, watches, tree.",
              extra_vars=[("protocol", "Protocol", 'label_values(roster_requests_total{cluster="$cluster"}, protocol)')])
    R = 'roster_requests_total{%s, protocol=~"$protocol"' % SEL
    H = 'roster_request_duration_seconds'
    HS = '%s, protocol=~"$protocol"' % SEL
    b.row("Requests")
    b.panel("timeseries", "Requests by operation", [('sum by (op) (rate(%s}[%s]))' % (R, RI), "{{op}}")], unit="reqps", w=12)
    b.panel("timeseries", "Requests by protocol and member", [('sum by (protocol, instance) (rate(%s}[%s]))' % (R, RI), "{{protocol}} {{instance}}")], unit="reqps", w=12)
    b.panel("timeseries", "Non-ok results by operation and result",
            [('sum by (op, result) (rate(%s, result!="ok"}[%s]))' % (R, RI), "{{op}} {{result}}")], unit="reqps", w=12,
            description="ZooKeeper result codes other than ok. Some are normal outcomes (no_node for an exists probe, node_exists for a lock attempt).")
    b.panel("timeseries", "Non-ok share",
            [('sum by (protocol) (rate(%s, result!="ok"}[%s])) / sum by (protocol) (rate(%s}[%s]))' % (R, RI, R, RI), "{{protocol}}")], unit="percentunit", w=12)
    b.row("Latency")
    b.panel("timeseries", "Latency p99 by operation",
            [('histogram_quantile(0.99, sum by (op, le) (rate(%s_bucket{%s}[%s])))' % (H, HS, RI), "{{op}}")], unit="s", w=12,
            description="From decoding a request to queueing its reply; writes include the quorum commit.")
    b.panel("timeseries", "Latency p50 by operation",
            [('histogram_quantile(0.5, sum by (op, le) (rate(%s_bucket{%s}[%s])))' % (H, HS, RI), "{{op}}")], unit="s", w=12)
    b.panel("timeseries", "Latency p99 by member",
            [('histogram_quantile(0.99, sum by (instance, le) (rate(%s_bucket{%s}[%s])))' % (H, HS, RI), "{{instance}}")], unit="s", w=12)
    b.panel("timeseries", "Mean latency by operation",
            [('sum by (op) (rate(%s_sum{%s}[%s])) / sum by (op) (rate(%s_count{%s}[%s]))' % (H, HS, RI, H, HS, RI), "{{op}}")], unit="s", w=12)
    b.row("Connections")
    b.panel("timeseries", "Open connections", [('sum by (instance, protocol) (roster_connections{%s, protocol=~"$protocol"})' % SEL, "{{protocol}} {{instance}}")])
    b.panel("timeseries", "Connections refused (per-IP limit)",
            [('sum by (instance) (rate(roster_connections_rejected_total{%s, protocol=~"$protocol"}[%s]))' % (SEL, RI), "{{instance}}")], unit="cps")
    b.panel("timeseries", "Bad frames and requests (ZooKeeper)",
            [('sum by (instance) (rate(roster_zk_bad_frames_total{%s}[%s]))' % (SEL, RI), "bad frames {{instance}}"),
             ('sum by (instance) (rate(roster_zk_bad_requests_total{%s}[%s]))' % (SEL, RI), "bad requests {{instance}}")], unit="ops",
            description="Frames over max_buffer or truncated (connection closed), and request bodies that did not decode.")
    b.panel("timeseries", "Four-letter words",
            [('sum by (cmd) (rate(roster_zk_four_letter_words_total{%s}[%s]))' % (SEL, RI), "{{cmd}}")], unit="ops", w=24, h=6)
    b.row("Sessions and watches")
    b.stat("Sessions", 'max(roster_sessions{%s})' % CL, w=6, description="Live sessions of the cluster (replicated on every member).")
    b.stat("Watches", 'sum(roster_watches{%s})' % CL, w=6, description="Watches held on all members.")
    b.stat("Nodes", 'max(roster_znodes{%s})' % CL, w=6)
    b.stat("Tree data", 'max(roster_data_bytes{%s})' % CL, unit="bytes", w=6)
    b.panel("timeseries", "Sessions", [('roster_sessions{%s}' % SEL, "{{instance}}")])
    b.panel("timeseries", "Sessions expired",
            [('sum(increase(roster_sessions_expired_total{%s}[%s]))' % (CL, RI), "expired")],
            description="Sessions expired by the server (the leader expires them).")
    b.panel("timeseries", "Watches by member", [('roster_watches{%s}' % SEL, "{{instance}}")])
    b.panel("timeseries", "Nodes", [('roster_znodes{%s}' % SEL, "all {{instance}}"),
                                    ('roster_ephemeral_nodes{%s}' % SEL, "ephemeral {{instance}}")], w=12)
    b.panel("timeseries", "Tree data (paths and data)", [('roster_data_bytes{%s}' % SEL, "{{instance}}")], unit="bytes", w=12)
    return b


def host():
    b = Board("roster-host", "Roster / Host",
              "Per-member process view: CPU, resident memory, file descriptors and threads (process_* metrics), "
              "scrape health, tree size and connections.")
    b.panel("timeseries", "CPU (cores)", [('rate(process_cpu_seconds_total{%s}[$__rate_interval])' % SEL, "{{instance}}")],
            description="CPU seconds per second used by the roster process (1 = one core busy).")
    b.panel("timeseries", "Resident memory", [('process_resident_memory_bytes{%s}' % SEL, "{{instance}}")], unit="bytes")
    b.panel("timeseries", "Open files",
            [('process_open_fds{%s}' % SEL, "open {{instance}}"), ('process_max_fds{%s}' % SEL, "limit {{instance}}")],
            description="File descriptors in use (connections, RocksDB files) against the process limit.")
    b.panel("timeseries", "Threads", [('process_threads{%s}' % SEL, "{{instance}}")])
    b.panel("timeseries", "Up", [('up{job="roster", %s}' % SEL, "{{instance}}")], field={"min": 0, "max": 1})
    b.panel("timeseries", "Scrape duration", [('scrape_duration_seconds{job="roster", %s}' % SEL, "{{instance}}")], unit="s",
            description="Time to render /metrics (a slow scrape means a busy or swapping process).")
    b.panel("timeseries", "Samples per scrape", [('scrape_samples_scraped{job="roster", %s}' % SEL, "{{instance}}")])
    b.panel("timeseries", "Tree data (memory proxy)", [('roster_data_bytes{%s}' % SEL, "{{instance}}")], unit="bytes",
            description="Approximate bytes of paths and data held in memory by the tree.")
    b.panel("timeseries", "Client connections (file descriptors proxy)",
            [('sum by (instance) (roster_connections{%s})' % SEL, "{{instance}}")],
            description="Open client connections; each holds one file descriptor.")
    b.panel("timeseries", "Restarts",
            [('resets(roster_backend_txns_total{%s}[$__range])' % SEL, "{{instance}}")],
            description="Counter resets of roster_backend_txns_total in the range: each is a process restart.")
    return b


def registry():
    b = Board("roster-registry", "Roster / Registry",
              "The registry, config and locks of the native API (and every protocol mapped onto it): services, "
              "instances and their health, registrations, leases, probes, config changes, lock traffic, HTTP API.")
    b.row("Registry")
    b.stat("Services", 'max(roster_registry_services{%s})' % CL, w=6)
    b.stat("Instances", 'max(sum by (instance) (roster_registry_instances{%s}))' % CL, w=6)
    b.stat("Healthy share",
           'max(roster_registry_instances{%s, healthy="true"}) / clamp_min(max(sum by (instance) (roster_registry_instances{%s})), 1)' % (CL, CL),
           unit="percentunit", w=6, description="Healthy and enabled instances over all instances.")
    b.stat("Leases granted (range)", 'sum(increase(roster_api_leases_granted_total{%s}[$__range]))' % CL, w=6)
    b.panel("timeseries", "Instances by health",
            [('max by (healthy) (roster_registry_instances{%s})' % CL, "healthy={{healthy}}")], w=12)
    b.panel("timeseries", "Registrations and deregistrations",
            [('sum by (protocol) (rate(roster_registry_registrations_total{%s}[%s]))' % (SEL, RI), "register {{protocol}}"),
             ('sum(rate(roster_registry_deregistrations_total{%s}[%s]))' % (SEL, RI), "deregister")], unit="ops", w=12)
    b.panel("timeseries", "Sessions (leases) expired",
            [('sum(increase(roster_sessions_expired_total{%s}[%s]))' % (CL, RI), "expired")],
            description="Every lease, ephemeral instance owner and ZooKeeper session ends the same way; a storm here is an outage upstream.")
    b.panel("timeseries", "Health probes",
            [('sum by (type, result) (rate(roster_registry_probes_total{%s}[%s]))' % (SEL, RI), "{{type}} {{result}}")], unit="ops")
    b.panel("timeseries", "Self-preservation",
            [('max by (instance) (roster_ap_self_preservation{%s})' % SEL, "AP {{instance}}"),
             ('max by (instance) (roster_eureka_self_preservation{%s})' % SEL, "Eureka {{instance}}")],
            field={"min": 0, "max": 1},
            description="1 while a member keeps registrations that would otherwise expire: AP — dead members' instances, because removing them would drop too many at once (docs/ap.md); Eureka — silent leases, because renews fell below 85% of the expected (docs/eureka.md).")
    b.panel("timeseries", "Eureka renews per minute",
            [('sum by (instance) (roster_eureka_renews_last_minute{%s})' % SEL, "renews {{instance}}"),
             ('sum by (instance) (roster_eureka_renew_threshold{%s})' % SEL, "threshold {{instance}}")],
            description="Renews each member received in the last minute against the self-preservation threshold.")
    b.panel("timeseries", "Protect threshold reached",
            [('sum(rate(roster_registry_protect_threshold_hits_total{%s}[%s]))' % (SEL, RI), "queries")], unit="ops",
            description="Healthy-only queries that returned every instance because too few were healthy.")
    b.panel("timeseries", "ZooKeeper layouts (Curator, Dubbo) kept in step",
            [('sum by (layout, direction, result) (rate(roster_registry_layout_writes_total{%s}[%s]))' % (SEL, RI), "{{layout}} {{direction}} {{result}}")],
            unit="ops", w=24,
            description="Writes that import Curator / Dubbo ZooKeeper nodes as instances and project instances into those layouts (docs/registry-model.md); `raced` = a conditional write lost to a newer change and was recomputed.")
    b.row("Config and locks")
    b.panel("timeseries", "Config changes", [('sum by (op) (rate(roster_config_writes_total{%s}[%s]))' % (SEL, RI), "{{op}}")], unit="ops")
    b.panel("timeseries", "Locks acquired", [('sum by (recipe) (rate(roster_lock_acquired_total{%s}[%s]))' % (SEL, RI), "{{recipe}}")], unit="ops")
    b.panel("timeseries", "Open API streams", [('sum by (kind) (roster_api_streams{%s})' % SEL, "{{kind}}")],
            description="Subscribe, observe and watch streams held open by clients.")
    b.row("HTTP API")
    b.panel("timeseries", "HTTP requests by route",
            [('sum by (method, route) (rate(roster_http_requests_total{%s}[%s]))' % (SEL, RI), "{{method}} {{route}}")], unit="reqps", w=12)
    b.panel("timeseries", "HTTP errors by status class",
            [('sum by (status) (rate(roster_http_requests_total{%s, status=~"4xx|5xx"}[%s]))' % (SEL, RI), "{{status}}")], unit="reqps", w=12)
    b.panel("timeseries", "HTTP latency p99 by route",
            [('histogram_quantile(0.99, sum by (route, le) (rate(roster_http_request_duration_seconds_bucket{%s}[%s])))' % (SEL, RI), "{{route}}")],
            unit="s", w=24)
    return b


BOARDS = {"overview.json": overview, "protocols.json": protocols, "host.json": host, "registry.json": registry}


def render():
    return {name: json.dumps(f().json(), indent=2, sort_keys=False) + "\n" for name, f in BOARDS.items()}


def main():
    out = render()
    if "--check" in sys.argv:
        bad = [n for n, s in out.items()
               if not os.path.exists(os.path.join(OUT, n)) or open(os.path.join(OUT, n)).read() != s]
        if bad:
            print("out of date (run python3 deploy/grafana/build.py): " + ", ".join(bad))
            sys.exit(1)
        print("dashboards up to date")
        return
    os.makedirs(OUT, exist_ok=True)
    for n, s in out.items():
        with open(os.path.join(OUT, n), "w") as f:
            f.write(s)
        print("wrote", os.path.join("deploy/grafana/dashboards", n))


if __name__ == "__main__":
    main()
