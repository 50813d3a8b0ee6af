"""`tandem twin run`, `tandem train`, `tandem train-curves` and `tandem evaluate`: the digital twin's commands."""

from __future__ import annotations

from pathlib import Path

from controller.twin.evaluate import BASELINE, DEFAULT_EVALUATED
from tandem.commands import Commands, lazy_handler


def add_twin_commands(commands: Commands) -> None:
    twin = commands.add_parser("twin", help="the digital twin: policies on a scenario, without daemons")
    actions = twin.add_subparsers(dest="twin_command", metavar="ACTION", required=True)
    run = actions.add_parser(
        "run", help="play a scenario under each policy and compare latency, time to first token and energy",
        description="Slot by slot on the scenario's channel trace and hardware profile (docs/twin.md): each policy "
        "decides every slot, the twin plays every user's speculative-decoding rounds with the same latency model "
        "the policies use. Deterministic for a seed; every policy sees the same requests.")
    run.add_argument("--scenario", type=Path, required=True, help="scenario YAML (see docs/twin.md)")
    run.add_argument("--policy", action="append", help=f"policy to play (repeatable; default: every installed one "
                     f"but the diagnostic `alternate`); reductions are against {BASELINE}")
    run.add_argument("--seed", type=int, default=0, help="seed of arrivals, lengths and acceptance (default 0)")
    run.add_argument("--json", action="store_true", help="print one JSON object")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(handler=lazy_handler("controller.twin.cli:run_twin"))


def add_train_command(commands: Commands) -> None:
    train = commands.add_parser(
        "train", help="train the mappo policy (RLlib multi-agent PPO, one agent per edge) in the digital twin",
        description="The best heuristic (max-SINR with hysteresis, each user's draft length from the edge model) "
        "decides; one agent per edge, all sharing one permutation-equivariant network, moves its users' draft "
        "lengths by -2..+2 (docs/twin.md). Every episode draws a training trace, a number of users and edges and an "
        "energy weight. Periodically the actor plays full-horizon validation episodes on every validation trace x "
        "seed beside the heuristic; the one with the lowest mean time in system is saved in OUT/best, what `tandem "
        "policy set mappo --checkpoint NAME` (once copied into the controller's policy directory) and `tandem "
        "evaluate --checkpoint OUT/best` load. Progress in OUT/progress.jsonl, TensorBoard logs in OUT/tensorboard. "
        "With --address it runs on an existing Ray cluster.")
    train.add_argument("--scenario", type=Path, required=True, help="scenario YAML (see docs/twin.md)")
    train.add_argument("--iterations", type=int, default=100, help="training iterations (100; each samples "
                       "--batch-size environment steps)")
    train.add_argument("--out", type=Path, help="output folder (default runs/mappo-<scenario name>)")
    train.add_argument("--address", help="Ray cluster address (e.g. ray://head:10001 or auto); default: a local "
                       "Ray on this machine")
    train.add_argument("--train-trace", type=Path, action="append", help="training trace (repeatable; default the "
                       "scenario's)")
    train.add_argument("--validation-trace", type=Path, action="append", help="validation trace (repeatable; "
                       "default the training traces)")
    train.add_argument("--validation-seeds", type=int, default=4, help="arrival seeds per validation trace; at "
                       "least 4 trace x seed pairs in all (4)")
    train.add_argument("--users", type=int, nargs=2, metavar=("LOW", "HIGH"), help="users per episode, drawn in "
                       "[LOW, HIGH] (default: the scenario's)")
    train.add_argument("--edges", type=int, nargs="+", help="edge counts to draw from (default: all the scenario's)")
    train.add_argument("--energy-weights", type=float, nargs="+", default=[0.0], help="energy weights (J^-1 in "
                       "units of requests in the system) to draw from (default 0)")
    train.add_argument("--loads", type=float, nargs="+", help="offered loads (offered work over the edges' batched "
                       "capacity, as in `tandem evaluate`) to draw from per episode (default: the scenario's arrivals)")
    train.add_argument("--episode-slots", type=int, default=300, help="slots per training episode (300; validation "
                       "always plays the scenario's whole duration)")
    train.add_argument("--max-users", type=int, default=24, help="user slots per agent, at least every edge's "
                       "capacity (24)")
    train.add_argument("--batch-size", type=int, default=8192, help="environment steps (twin slots) sampled per "
                       "iteration (8192)")
    train.add_argument("--minibatch-size", type=int, default=4096, help="agent steps per PPO update (4096)")
    train.add_argument("--batch-envs", type=int, default=32, help="episodes the batched twin steps at once (32)")
    train.add_argument("--epochs", type=int, default=8, help="PPO passes over each batch (8)")
    train.add_argument("--gamma", type=float, default=0.99, help="discount (0.99)")
    train.add_argument("--eval-every", type=int, default=10, help="validate every N iterations (10)")
    train.add_argument("--env-runners", type=int, default=0, help="Ray env runners sampling in parallel (0: in "
                       "the driver, right for 2 cores)")
    train.add_argument("--envs-per-runner", type=int, default=1, help="environments each runner steps in turn (1)")
    train.add_argument("--seed", type=int, default=0, help="seed of episodes and networks (0)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(handler=lazy_handler("controller.twin.cli:run_train"))


def add_curves_command(commands: Commands) -> None:
    curves = commands.add_parser(
        "train-curves", help="plot the learning curves of several `tandem train` runs (one per seed) on one PNG",
        description="Validation mean time in system (each run, and the heuristic it corrects, dashed) and mean "
        "training-episode return against environment steps, from each run folder's progress.jsonl.")
    curves.add_argument("runs", type=Path, nargs="+", help="`tandem train` output folders")
    curves.add_argument("-o", "--out", type=Path, required=True, help="PNG to write")
    curves.set_defaults(handler=lazy_handler("controller.twin.cli:run_curves"))


def add_evaluate_command(commands: Commands) -> None:
    evaluate = commands.add_parser(
        "evaluate", help="every policy on held-out traces over a grid of layouts, loads, modes and energy weights",
        description="Plays every policy in the digital twin on the same held-out traces and arrival seeds (every "
        "policy gets identical requests) for each cell of the grid (users x edge layouts x offered loads x PSD/SD x "
        "energy weight) and reports mean time in system (unfinished requests counted to the end), completion, "
        "latency of the completed requests, time to first token and device energy with 95%% confidence intervals, "
        "and each policy's paired time-in-system reduction against max-sinr-hysteresis and against the strongest "
        "non-learned policy. A layout of N edges is the scenario's N edges that cover the most user-slots on the "
        "traces; a load is offered work over the layout's batched capacity. Writes OUT/evaluate.json and PNG "
        "plots; --report writes the Markdown report (docs/evaluation.md).")
    evaluate.add_argument("--scenario", type=Path, required=True, help="scenario YAML (its edges, workload, profile)")
    evaluate.add_argument("--trace", type=Path, action="append", required=True, help="held-out trace (repeatable; "
                          "never one the policy was trained or validated on)")
    evaluate.add_argument("--seeds", type=int, default=2, help="arrival seeds per trace (2), from 2000000 on: "
                          "never used in training")
    evaluate.add_argument("--users", type=int, nargs="+", help="user counts (default: the scenario's)")
    evaluate.add_argument("--edges", type=int, nargs="+", default=[3, 4, 5], help="edge counts: each the "
                          "best-covering subset of the scenario's edges (3 4 5)")
    evaluate.add_argument("--loads", type=float, nargs="+", help="offered work / batched capacity, e.g. 0.3 0.6 0.9 "
                          "(default: the scenario's arrivals)")
    evaluate.add_argument("--modes", nargs="+", choices=["psd", "sd"], default=["psd", "sd"])
    evaluate.add_argument("--energy-weights", type=float, nargs="+", default=[0.0, 0.5])
    evaluate.add_argument("--policy", action="append", help="policy to play, name[:key=value,...] (repeatable; "
                          "default: " + ", ".join(DEFAULT_EVALUATED) + ")")
    evaluate.add_argument("--checkpoint", type=Path, help="mappo policy folder (default: the shipped one, "
                          "policies/mappo)")
    evaluate.add_argument("--out", type=Path, default=Path("results/evaluate"), help="folder for JSON and plots")
    evaluate.add_argument("--report", type=Path, help="write the Markdown table here (e.g. docs/evaluation.md)")
    evaluate.add_argument("--jobs", type=int, default=2, help="worker processes (2)")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(handler=lazy_handler("controller.twin.cli:run_evaluate"))


def register(commands: Commands) -> None:
    add_twin_commands(commands)
    add_train_command(commands)
    add_curves_command(commands)
    add_evaluate_command(commands)
