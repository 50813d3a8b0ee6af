"""Channel traces: Sionna generation (UMi, RT), the versioned format and its validating reader, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tandem.trace_format import TraceError, load_trace, save_trace
from toolbox.traces.generate import TraceRequest, generate_trace
from toolbox.traces.radio_scenario import load_radio_scenario
from harness.clients import run_tandem


def test_umi_trace_is_sane_and_deterministic(umi_trace):
    trace = load_trace(umi_trace)
    meta = trace.metadata
    assert (meta.num_slots, meta.num_users, meta.num_edges, meta.slot_ms) == (60, 4, 3, 100.0)
    assert meta.scenario == "umi" and meta.sionna_version.startswith("2.")
    path_loss = -trace.path_gain_db
    assert 40 < path_loss.min() and path_loss.max() < 200
    assert 0 <= trace.se.min() and trace.se.max() < 6  # 64-QAM table: at most ~5.55 bit/s/Hz
    best = trace.sinr_db[0].max(axis=-1)  # each user's best edge per slot
    assert np.median(best) > 0
    # Time-consistent: inside a mobility epoch the wideband gain moves by fading only, not redrawn shadowing.
    change = np.abs(np.diff(trace.path_gain_db, axis=0))
    inside = (np.arange(change.shape[0]) + 1) % meta.mobility_epoch_slots != 0
    assert np.median(change[inside]) < 3.0
    again = generate_trace(TraceRequest(load_radio_scenario(None, "umi"), 3, 4, 60, 100.0, 3), quiet=True)
    for name in ("se", "sinr_db", "path_gain_db", "user_pos"):
        np.testing.assert_array_equal(getattr(again, name), getattr(trace, name))


def test_ray_traced_scenario_runs_on_cpu(tmp_path):
    path = tmp_path / "rt.npz"
    done = run_tandem("traces", "generate", "--scenario", "rt:simple_street_canyon", "--edges", "2", "--users",
                      "2", "--slots", "5", "--quiet", "-o", str(path))
    assert done.returncode == 0, done.stderr
    trace = load_trace(path)
    assert trace.metadata.scenario == "rt:simple_street_canyon"
    assert trace.se.shape == (2, 5, 2, 2) and (trace.se > 0).any()


def test_ray_tracing_without_a_new_enough_llvm_says_so_in_one_line(tmp_path, monkeypatch):
    # An LLVM older than 17 aborts Dr.Jit with an "LLVM ERROR: Cannot select" dump: it must be refused up front.
    old = tmp_path / "libLLVM-15.so.1"
    old.write_bytes(b"")
    not_llvm = tmp_path / "libsomething.so"
    not_llvm.write_bytes(b"")
    for library, reason in ((old, "is LLVM 15"), (not_llvm, "is not a loadable LLVM library")):
        monkeypatch.setenv("DRJIT_LIBLLVM_PATH", str(library))
        done = run_tandem("traces", "generate", "--scenario", "rt:simple_street_canyon", "--edges", "2", "--users",
                          "2", "--slots", "2", "--quiet", "-o", str(tmp_path / "rt.npz"))
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and reason in lines[0], done.stderr
        assert "LLVM >= 17" in lines[0] and "apt-get install libllvm19" in lines[0]
        assert not (tmp_path / "rt.npz").exists()


def test_show_plot_and_mahimahi_export(umi_trace, tmp_path):
    shown = run_tandem("traces", "show", str(umi_trace))
    assert shown.returncode == 0, shown.stderr
    assert "3 edges x 4 users x 60 slots" in shown.stdout and "downlink SE" in shown.stdout
    plotted = run_tandem("traces", "plot", str(umi_trace), "-o", str(tmp_path))
    assert plotted.returncode == 0, plotted.stderr
    for name in ("sinr_over_time.png", "association_map.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    trace = load_trace(umi_trace)
    user, edge = trace.most_reliable_pair()
    out = tmp_path / "link.down"
    exported = run_tandem("traces", "export-mahimahi", str(umi_trace), "--user", str(user), "--edge", str(edge),
                          "--share", "0.5", "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    stamps = np.array([int(line) for line in out.read_text().split()])
    assert stamps[0] >= 1 and (np.diff(stamps) >= 0).all() and stamps[-1] <= 6000
    expected_packets = (trace.rate_bps("down", user, edge, 0.5) * 0.1).sum() / 12000
    assert abs(len(stamps) - expected_packets) <= 1


def _rewrite(source, target, change):
    with np.load(source) as archive:
        contents = {name: archive[name] for name in archive.files}
    metadata = json.loads(str(contents["metadata"]))
    change(contents, metadata)
    contents["metadata"] = np.array(json.dumps(metadata))
    with open(target, "wb") as handle:
        np.savez(handle, **contents)


BAD_TRACES = {
    "truncated": "not a readable trace file",
    "wrong_version": "version 99 is not supported",
    "inconsistent": "the file is inconsistent",
    "nan": "NaN or infinite",
    "missing_array": "arrays missing: mcs",
    "not_a_trace": "not a readable trace file",
}


@pytest.mark.parametrize("case", sorted(BAD_TRACES))
def test_bad_trace_files_are_refused_with_the_reason(case, umi_trace, tmp_path):
    bad = tmp_path / f"{case}.npz"
    if case == "truncated":
        data = umi_trace.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif case == "not_a_trace":
        bad.write_text("slot,rate\n0,1\n")
    elif case == "wrong_version":
        _rewrite(umi_trace, bad, lambda arrays, meta: meta.update(version=99))
    elif case == "inconsistent":
        _rewrite(umi_trace, bad, lambda arrays, meta: arrays.update(se=arrays["se"][:, :-1]))
    elif case == "nan":
        _rewrite(umi_trace, bad, lambda arrays, meta: arrays["sinr_db"].__setitem__((0, 0, 0, 0), np.nan))
    elif case == "missing_array":
        _rewrite(umi_trace, bad, lambda arrays, meta: arrays.pop("mcs"))
    with pytest.raises(TraceError, match=BAD_TRACES[case]):
        load_trace(bad)
    shown = run_tandem("traces", "show", str(bad))
    assert shown.returncode == 2 and BAD_TRACES[case] in shown.stderr


def test_save_refuses_an_inconsistent_trace(umi_trace, tmp_path):
    trace = load_trace(umi_trace)
    broken = type(trace)(**{**trace.__dict__, "se": trace.se[:, :5]})
    with pytest.raises(TraceError):
        save_trace(broken, tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.parametrize("args, reason", [
    (["--scenario", "suburb"], "scenario must be one of"),
    (["--scenario", "rt:atlantis"], "scenario must be one of"),
    (["--users", "0"], "--users must be >= 1"),
    (["--slot-ms", "0"], "--slot-ms must be within"),
    (["--config", "{missing}"], "cannot read config file"),
    (["--config", "{bad}"], "carrier_ghz"),
    (["--config", "{edges}", "--edges", "3"], "places 1 edges but --edges is 3"),
])
def test_bad_generation_requests_exit_2(args, reason, tmp_path):
    (tmp_path / "bad.yaml").write_text("carrier_ghz: -3\n")
    (tmp_path / "edges.yaml").write_text("edges:\n  - position_m: [0, 0, 10]\n")
    args = [a.format(missing=tmp_path / "nope.yaml", bad=tmp_path / "bad.yaml", edges=tmp_path / "edges.yaml")
            for a in args]
    done = run_tandem("traces", "generate", *args, "--slots", "2", "-o", str(tmp_path / "t.npz"))
    assert done.returncode == 2 and reason in done.stderr, done.stderr


def test_long_traces_are_split_into_topology_windows(monkeypatch):
    import toolbox.traces.sionna_3gpp as stochastic

    # 2 users x 3 epochs of 10 slots; windows of 2 epochs: the last window holds fewer UT entries
    monkeypatch.setattr(stochastic, "MAX_ENTRIES_PER_TOPOLOGY", 4)
    trace = generate_trace(TraceRequest(load_radio_scenario(None, "umi"), 2, 2, 30, 100.0, 5), quiet=True)
    assert trace.se.shape == (2, 30, 2, 2) and np.isfinite(trace.path_gain_db).all()
