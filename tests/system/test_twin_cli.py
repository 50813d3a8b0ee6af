"""`tandem profile` measures the engines into a profile, and `tandem twin run` plays policies on it."""

from __future__ import annotations

import json

from harness.clients import run_tandem
from tandem.profiles import load_profile


def test_profile_measures_the_engines_and_twin_run_compares_policies(prepared, umi_trace, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Why is the sky blue?\nName a red fruit.\n")
    out = tmp_path / "cpu.yaml"
    done = run_tandem("profile", "--engine", "llamacpp", "--repeats", "1", "--answer-tokens", "8", "--prompts",
                      str(prompts), "--out", str(out))
    assert done.returncode == 0, done.stderr
    measured = load_profile(out)
    assert measured.device.draft_seconds_per_token > 0 and measured.edge.block_seconds(4) > 0
    assert 0 <= measured.acceptance.per_token <= 1 and set(measured.acceptance.by_draft_length) == {1, 2, 4, 8}
    assert [p.blocks for p in measured.edge.batch_scaling] == [1, 2, 4, 8]

    scenario_file = tmp_path / "scenario.yaml"
    scenario_file.write_text(
        f"name: small\ntrace: {umi_trace}\nprofile: {out}\nusers: 4\nedges: [{{id: 0}}, {{id: 1}}, {{id: 2}}]\n"
        # Long enough that requests complete even on a profile measured while the machine was busy.
        "duration_slots: 600\narrivals: {kind: poisson, rate_per_user_s: 0.05}\n"
        "prompt_tokens: {kind: fixed, value: 32}\nanswer_tokens: {kind: fixed, value: 24}\n")
    compared = run_tandem("twin", "run", "--scenario", str(scenario_file), "--policy", "max-sinr-hysteresis",
                          "--policy", "tma-opt", "--json")
    assert compared.returncode == 0, compared.stderr
    result = json.loads(compared.stdout)
    assert set(result["policies"]) == {"max-sinr-hysteresis", "tma-opt"}
    assert result["policies"]["max-sinr-hysteresis"]["time_in_system_reduction_vs_baseline"] == 0.0
    refused = run_tandem("twin", "run", "--scenario", str(tmp_path / "missing.yaml"))
    assert refused.returncode == 2 and "cannot read scenario" in refused.stderr
