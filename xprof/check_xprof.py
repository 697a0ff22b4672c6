#!/usr/bin/env python3
"""Opens a log dir written by `rankline export-xprof` the way XProf does.

Builds XProf's own profile plugin on the log dir (what `xprof --logdir DIR`
serves) and asks its HTTP routes, in process, what the UI asks: the runs,
the run's tools, its hosts, then each host's trace viewer data and the
all-hosts overview page, which convert every .xplane.pb with XProf's own
converter. Checks them against the export's index file
(`DIR/rankline-xprof-<run>.json`). Exits 1 on any mismatch or failure.

Usage: python check_xprof.py LOGDIR     (with `pip install xprof`)
"""

import glob
import gzip
import json
import os
import sys


def fail(message):
    print(f"check_xprof: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def body(response):
    data = response.get_data()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def main():
    if len(sys.argv) != 2:
        fail("usage: check_xprof.py LOGDIR")
    logdir = os.path.abspath(sys.argv[1])
    indexes = glob.glob(os.path.join(logdir, "rankline-xprof-*.json"))
    if not indexes:
        fail(f"no rankline-xprof-*.json index in {logdir}")

    try:
        from werkzeug.test import Client
        from xprof import server
    except ImportError as error:
        fail(f"xprof is not installed in {sys.executable}: {error}")

    context = server.TBContext(
        logdir, server.DataProvider(logdir), server.TBContext.Flags(False)
    )
    context.hide_capture_profile_button = True
    context.enable_tab_name_label = False
    context.src_prefix = None
    plugin = server.ProfilePluginLoader().load(context)
    client = Client(server.make_wsgi_app(plugin))

    def get(route, **query):
        response = client.get("/data/plugin/profile" + route, query_string=query)
        if response.status_code != 200:
            fail(f"{route} {query} answered {response.status_code}: {body(response)[:300]!r}")
        return body(response)

    runs = json.loads(get("/runs"))
    for index_path in sorted(indexes):
        with open(index_path) as f:
            index = json.load(f)
        run = index["run"]
        expected_hosts = sorted(h["host"] for h in index["hosts"])
        if run not in runs:
            fail(f"XProf lists runs {runs}, not {run}")
        tools = json.loads(get("/run_tools", run=run))
        trace_tool = next((t for t in ("trace_viewer@", "trace_viewer") if t in tools), None)
        if trace_tool is None:
            fail(f"run {run} offers no trace viewer; its tools: {tools}")
        hosts = sorted(h["hostname"] for h in json.loads(get("/hosts", run=run, tag=trace_tool)))
        if hosts != expected_hosts:
            fail(f"XProf sees hosts {hosts}, the index lists {expected_hosts}")
        for host in hosts:
            trace = json.loads(get("/data", run=run, tag=trace_tool, host=host))
            events = trace.get("traceEvents", [])
            process_names = {
                e.get("args", {}).get("name", "")
                for e in events
                if e.get("name") == "process_name"
            }
            if not any(name.startswith(host) for name in process_names):
                fail(f"{host}: no process named after the host in {sorted(process_names)}")
            print(f"{run} {host}: {trace_tool} {len(events)} events")
        if "overview_page" in tools:
            overview = get("/data", run=run, tag="overview_page", host="ALL_HOSTS")
            print(f"{run} ALL_HOSTS: overview_page {len(overview)} bytes")
    print(f"check_xprof: OK ({len(indexes)} run(s))")


if __name__ == "__main__":
    main()
