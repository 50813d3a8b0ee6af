"""`tandem traces ...`: generate, show, plot and export channel traces."""

from __future__ import annotations

import argparse
from pathlib import Path

from tandem.cli_support import EXIT_OK, EXIT_USAGE, fail
from tandem.traces.format import DIRECTIONS, TraceError, load_trace


def add_trace_commands(commands: argparse._SubParsersAction) -> None:
    traces = commands.add_parser("traces", help="Sionna channel traces for the link emulator").add_subparsers(
        dest="traces_command", metavar="ACTION", required=True)

    generate = traces.add_parser(
        "generate", help="simulate a scenario with Sionna and write a trace file",
        description="Simulate E edges and U moving users for T slots with Sionna: 3GPP TR 38.901 UMi/UMa/RMa "
        "channels (time-consistent; spatially consistent across mobility epochs) or Sionna RT ray tracing in a "
        "shipped scene; then Sionna SYS link adaptation gives each slot's spectral efficiency per user-edge pair, "
        "up- and downlink. Deterministic for a seed. Geometry and radio parameters come from --config (YAML, see "
        "docs/traces.md) with sane defaults.")
    generate.add_argument("--scenario", help="umi, uma, rma or rt:<scene> (e.g. rt:simple_street_canyon, "
                                             "rt:munich); overrides the config file (default umi)")
    generate.add_argument("--config", type=Path, help="scenario YAML (edge positions, carrier, bandwidth, power, "
                                                      "noise figures, area, mobility)")
    generate.add_argument("--edges", type=int, default=3, help="edge servers (default 3)")
    generate.add_argument("--users", type=int, default=12, help="users (default 12)")
    generate.add_argument("--slots", type=int, default=600, help="time slots (default 600)")
    generate.add_argument("--slot-ms", type=float, default=100.0, help="slot length in ms (default 100)")
    generate.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    generate.add_argument("--quiet", action="store_true", help="no progress bars")
    generate.add_argument("-o", "--output", type=Path, required=True, help="trace file to write (.npz)")
    generate.set_defaults(handler=_generate)

    show = traces.add_parser("show", help="summarise a trace file (shape, metadata, SINR/SE/outage ranges)")
    show.add_argument("trace", type=Path)
    show.set_defaults(handler=_show)

    plot = traces.add_parser("plot", help="write PNGs: SINR over time per user, association map of best edges")
    plot.add_argument("trace", type=Path)
    plot.add_argument("-o", "--output-dir", type=Path, default=Path("."), help="folder for the PNGs (default .)")
    plot.set_defaults(handler=_plot)

    export = traces.add_parser(
        "export-mahimahi", help="write one link as a Mahimahi delivery-opportunity trace",
        description="One user-edge link, one direction, at a bandwidth share: a file for mm-link (one line per "
        "1500-byte delivery opportunity, in ms).")
    export.add_argument("trace", type=Path)
    export.add_argument("--user", type=int, default=0)
    export.add_argument("--edge", type=int, default=0)
    export.add_argument("--direction", choices=DIRECTIONS, default="down")
    export.add_argument("--share", type=float, default=1.0, help="the user's share of the edge's bandwidth")
    export.add_argument("-o", "--output", type=Path, required=True)
    export.set_defaults(handler=_export)


def _generate(args: argparse.Namespace) -> int:
    from tandem.traces.format import save_trace
    from tandem.traces.generate import TraceRequest, generate_trace
    from tandem.traces.scenario import ScenarioError, load_scenario
    from tandem.traces.sionna_rt import RayTracingUnavailable

    try:
        request = TraceRequest(load_scenario(args.config, args.scenario), args.edges, args.users, args.slots,
                               args.slot_ms, args.seed)
        trace = generate_trace(request, quiet=args.quiet)
    except ScenarioError as error:
        return fail(str(error), EXIT_USAGE)
    except RayTracingUnavailable as error:  # a missing dependency, said in one line (what, and how to install it)
        return fail(str(error), EXIT_USAGE)
    save_trace(trace, args.output)
    print(f"wrote {args.output} ({trace.metadata.generation_seconds:.1f} s)")
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    from tandem.traces.summary import summarise

    try:
        print(summarise(load_trace(args.trace)))
    except TraceError as error:
        return fail(str(error), EXIT_USAGE)
    return EXIT_OK


def _plot(args: argparse.Namespace) -> int:
    from tandem.traces.plot import plot_trace

    try:
        trace = load_trace(args.trace)
    except TraceError as error:
        return fail(str(error), EXIT_USAGE)
    for path in plot_trace(trace, args.output_dir):
        print(f"wrote {path}")
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from tandem.traces.mahimahi import ExportError, export_mahimahi

    try:
        count = export_mahimahi(load_trace(args.trace), args.direction, args.user, args.edge, args.share,
                                args.output)
    except (TraceError, ExportError) as error:
        return fail(str(error), EXIT_USAGE)
    print(f"wrote {args.output} ({count} delivery opportunities)")
    return EXIT_OK
