"""`tandem traces ...`: generate, show, plot and export channel traces."""

from __future__ import annotations

import argparse

from tandem.cli_support import EXIT_OK, EXIT_USAGE, fail
from tandem.trace_format import TraceError, load_trace


def run_generate(args: argparse.Namespace) -> int:
    from tandem.trace_format import save_trace
    from toolbox.traces.generate import TraceRequest, generate_trace
    from toolbox.traces.radio_scenario import RadioScenarioError, load_radio_scenario
    from toolbox.traces.sionna_rt import RayTracingUnavailable

    try:
        request = TraceRequest(load_radio_scenario(args.config, args.scenario), args.edges, args.users, args.slots,
                               args.slot_ms, args.seed)
        trace = generate_trace(request, quiet=args.quiet)
    except RadioScenarioError as error:
        return fail(str(error), EXIT_USAGE)
    except RayTracingUnavailable as error:  # a missing dependency, said in one line (what, and how to install it)
        return fail(str(error), EXIT_USAGE)
    save_trace(trace, args.output)
    print(f"wrote {args.output} ({trace.metadata.generation_seconds:.1f} s)")
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    from toolbox.traces.summary import summarise

    try:
        print(summarise(load_trace(args.trace)))
    except TraceError as error:
        return fail(str(error), EXIT_USAGE)
    return EXIT_OK


def run_plot(args: argparse.Namespace) -> int:
    from toolbox.traces.plot import plot_trace

    try:
        trace = load_trace(args.trace)
    except TraceError as error:
        return fail(str(error), EXIT_USAGE)
    for path in plot_trace(trace, args.output_dir):
        print(f"wrote {path}")
    return EXIT_OK


def run_export(args: argparse.Namespace) -> int:
    from toolbox.traces.mahimahi import ExportError, export_mahimahi

    try:
        count = export_mahimahi(load_trace(args.trace), args.direction, args.user, args.edge, args.share,
                                args.output)
    except (TraceError, ExportError) as error:
        return fail(str(error), EXIT_USAGE)
    print(f"wrote {args.output} ({count} delivery opportunities)")
    return EXIT_OK
