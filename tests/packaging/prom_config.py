#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Prints the shipped Prometheus configuration (deploy/prometheus/prometheus.yml)
with only what a test must change: the targets of the blkfleet-server job, the
blkfleet-agent job reduced to one target with its `host` label, and the
scrape and rule evaluation intervals (seconds instead of 30 s). Everything
else (job names, rule_files, relabelling if any) is kept as shipped.

Usage: prom_config.py SHIPPED_YML SERVER_TARGET AGENT_TARGET AGENT_HOST INTERVAL
"""
import sys

import yaml


def main():
    shipped, server, agent, host, interval = sys.argv[1:6]
    with open(shipped, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    jobs = {j.get("job_name"): j for j in cfg.get("scrape_configs", [])}
    for name in ("blkfleet-server", "blkfleet-agent"):
        if name not in jobs or not jobs[name].get("static_configs"):
            sys.exit(f"{shipped}: no job {name} with static_configs")
    jobs["blkfleet-server"]["static_configs"] = [{"targets": [server]}]
    labels = dict(jobs["blkfleet-agent"]["static_configs"][0].get("labels", {}))
    if "host" not in labels:
        sys.exit(f"{shipped}: the blkfleet-agent targets carry no host label")
    labels["host"] = host
    jobs["blkfleet-agent"]["static_configs"] = [{"targets": [agent], "labels": labels}]
    cfg.setdefault("global", {})
    cfg["global"]["scrape_interval"] = interval
    cfg["global"]["evaluation_interval"] = interval
    yaml.safe_dump(cfg, sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
