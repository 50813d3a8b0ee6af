"""`tandem testbed up | status | down`: the testbed as local processes (testbed/bed.py)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from tandem.cli_support import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError, fail
from testbed.config import load_testbed_config


def run_up(args: argparse.Namespace) -> int:
    from testbed.bed import Testbed
    from tandem.processes import DaemonFailed

    try:
        bed = Testbed(load_testbed_config(args.config))
        print(f"testbed {bed.scenario.name}: {len(bed.scenario.edges)} edges ({bed.config.engine}), "
              f"{len(bed.scenario.user_ids())} users, dilation {bed.dilation:g}; run folder {bed.run_dir}")
        bed.up(devices=not args.no_devices)
    except UsageError as error:
        return fail(str(error), EXIT_USAGE)
    except DaemonFailed as error:
        return fail(str(error), EXIT_FAILED)
    admin = (f"admin commands: TANDEM_TLS_DIR={bed.tls_dir} tandem policy ... (the admin certificate)"
             if bed.config.tls else f"admin token (plaintext) in {bed.admin_token_file}")
    print(f"up. `tandem testbed status` follows it, `tandem testbed down` stops it; {admin}")
    return EXIT_OK


def run_status(args: argparse.Namespace) -> int:
    from testbed.bed import _alive, read_state
    from testbed.metrics import by_label, scrape, total

    try:
        config = load_testbed_config(args.config)
        state = read_state(config.run_dir)
    except UsageError as error:
        return fail(str(error), EXIT_USAGE)
    print(f"{'process':<28} {'pid':>8} {'state':<8} {'endpoint':<22} log")
    controller = None
    fleets = []
    for daemon in state["daemons"]:
        announced = daemon["announced"]
        alive = "running" if _alive(daemon["pid"]) else "exited"
        print(f"{daemon['name']:<28} {daemon['pid']:>8} {alive:<8} {announced.get('address') or '':<22} "
              f"{daemon['log']}")
        if announced.get("daemon") == "controller":
            controller = announced["address"]
        if announced.get("daemon") == "devices" and alive == "running":
            fleets.append(announced)
    if controller:
        print()
        subprocess.run([sys.executable, "-m", "tandem", "controller", "status", "--controller", controller],
                       env={**os.environ, **state.get("client_env", {})})
    latency, rate, done = {}, {}, 0.0
    for fleet in fleets:
        samples = scrape(config.host, fleet["metrics_port"])
        latency |= by_label(samples, "tandem_device_last_latency_seconds", "user")
        rate |= by_label(samples, "tandem_device_last_tokens_per_second", "user")
        done += total(samples, "tandem_device_requests_total")
    if latency:
        print(f"\nrequests ended: {done:.0f}; latest request per user (emulated time):")
        print(f"{'user':>5} {'latency s':>10} {'tok/s':>8}")
        for user in sorted(latency, key=int):
            print(f"{user:>5} {latency[user]:>10.2f} {rate.get(user, float('nan')):>8.1f}")
    return EXIT_OK


def run_down(args: argparse.Namespace) -> int:
    from testbed.bed import stop_recorded

    try:
        config = load_testbed_config(args.config)
    except UsageError as error:
        return fail(str(error), EXIT_USAGE)
    killed = stop_recorded(config.run_dir)
    print(json.dumps({"stopped": True, "killed_after_timeout": killed}) if killed else "down: every process stopped")
    return EXIT_OK
