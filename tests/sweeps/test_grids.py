"""The named grids: FLOP matching, ARM/MDM twins and compute pairs, the scaling_1b and scaling_8b spans, and
bad grid input."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from models.config import preset
from sweeps.grid import known_grids
from sweeps.plan import plan_grid


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    """Every named grid planned; a grid that reads local files (the ladder's fetched corpus) reads a
    small stand-in text instead, since planning checks that the files exist."""
    from sweeps.grid import load_grid

    root = tmp_path_factory.mktemp("runs")
    text = tmp_path_factory.mktemp("corpus") / "play.txt"
    text.write_text("Ber.\nWho's there?\n\nFran.\nNay, answer me.\n")
    overrides = {name: [f"data.files=[{text}]"] if load_grid(name).data.source == "files" else []
                 for name in known_grids()}
    return {name: plan_grid(name, overrides[name], runs_dir=str(root)) for name in known_grids()}


def test_required_grids_exist(plans):
    assert {"scaling_1b", "scaling_8b", "isoflop", "smoke"} <= set(plans)


def _compute_paired(plan) -> set[str]:
    """Model names of the grid's ``pairing: compute`` entries (matched on C alone, not twins)."""
    return {e.preset_for(o) for e in plan.grid_config.models if e.pairing == "compute" for o in ("arm", "mdm")}


def test_six_n_d_within_one_percent_of_every_budget(plans):
    for name, plan in plans.items():
        assert plan.runs, name
        budgets = set(plan.grid_config.budgets)
        for run in plan.runs:
            cfg = run.config
            n = preset(run.model).non_embedding_params
            tokens = cfg["budget"]["steps"] * cfg["trainer"]["global_batch_size"] * cfg["trainer"]["seq_len"]
            assert cfg["budget"]["non_embedding_params"] == n
            assert cfg["budget"]["tokens"] == tokens
            assert cfg["budget"]["flops"] == pytest.approx(6 * n * tokens)
            assert cfg["budget"]["flops_budget"] in budgets
            assert abs(6 * n * tokens / cfg["budget"]["flops_budget"] - 1) <= 0.01, (name, run.name)


def test_arm_and_mdm_twins_differ_only_in_objective(plans):
    for name, plan in plans.items():
        points: dict = {}
        for run in [r for r in plan.runs if r.model not in _compute_paired(plan)]:
            point = (run.config["model"]["d_model"], run.config["model"]["n_layers"], run.budget.flops_budget, run.seed)
            points.setdefault(point, {})[run.objective] = run
        for point, twins in points.items():
            assert set(twins) == {"arm", "mdm"}, (name, point)
            arm, mdm = twins["arm"], twins["mdm"]
            assert arm.budget == mdm.budget  # N, D, C, steps
            assert arm.seed == mdm.seed and arm.key != mdm.key
            assert arm.config["model"]["causal"] is True and mdm.config["model"]["causal"] is False
            for section in ("data", "optim", "schedule", "mdm", "trainer", "budget", "eval", "tracking"):
                assert json.dumps(arm.config[section], sort_keys=True) == json.dumps(mdm.config[section], sort_keys=True)
            strip = lambda m: {k: v for k, v in m.items() if k not in ("name", "causal")}  # noqa: E731
            assert strip(arm.config["model"]) == strip(mdm.config["model"])


def _check_compute_pairs(plan) -> int:
    """At every (budget, seed) of a compute-paired grid: one ARM and one MDM of different architectures,
    each with its own N and D = C / 6N rounded to whole steps, everything but model and budget shared."""
    points: dict = {}
    for run in plan.runs:
        points.setdefault((run.budget.flops_budget, run.seed), {})[run.objective] = run
    for point, pair in points.items():
        assert set(pair) == {"arm", "mdm"}, point
        arm, mdm = pair["arm"], pair["mdm"]
        assert arm.budget.non_embedding_params != mdm.budget.non_embedding_params
        assert arm.config["model"]["causal"] is True and mdm.config["model"]["causal"] is False
        for run in (arm, mdm):
            cfg, n = run.config, run.budget.non_embedding_params
            assert n == preset(run.model).non_embedding_params
            batch_tokens = cfg["trainer"]["global_batch_size"] * cfg["trainer"]["seq_len"]
            exact_steps = point[0] / (6 * n * batch_tokens)  # D = C / 6N, in steps
            assert abs(run.budget.steps - exact_steps) <= 0.5
            assert run.budget.tokens == run.budget.steps * batch_tokens
            assert run.budget.flops == pytest.approx(6 * n * run.budget.tokens)
            assert abs(run.budget.flops / point[0] - 1) <= 0.5 / exact_steps + 1e-12  # within rounding
        assert arm.budget.steps != mdm.budget.steps  # their own D, so their own steps
        for section in ("data", "optim", "schedule", "mdm", "trainer", "eval", "tracking"):
            assert json.dumps(arm.config[section], sort_keys=True) == json.dumps(mdm.config[section], sort_keys=True)
    return len(points)


def test_compute_pair_gives_each_model_its_own_tokens(tmp_path):
    arm, mdm = "cpu-0.2m", "cpu-0.4m"  # 4 x 64 against 2 x 128: different architectures
    assert preset(arm).n_layers != preset(mdm).n_layers
    budgets = ["budgets=[4.3e11,1.3e12,3.9e12]"]
    plan = plan_grid("smoke", [f"models=[{{arm: {arm}, mdm: {mdm}, pairing: compute}}]", *budgets],
                     runs_dir=str(tmp_path))
    assert _check_compute_pairs(plan) == 3
    assert {(r.objective, r.model) for r in plan.runs} == {("arm", arm), ("mdm", mdm)}
    # The pairing is not part of a run: the same runs listed as two single-objective entries have the same keys.
    apart = plan_grid("smoke", [f"models=[{{arm: {arm}}},{{mdm: {mdm}}}]", *budgets], runs_dir=str(tmp_path))
    assert sorted(r.key for r in plan.runs) == sorted(r.key for r in apart.runs)


def test_compute_pair_is_kept_or_dropped_whole_by_the_window(tmp_path):
    # tiny (92.5k) and cpu-0.2m (185k): D/N at 4.3e11 is 8.4 and 2.1, at 1.3e12 25 and 6.3, at 3.9e12 76 and 19.
    # cpu-50k (49.9k) trains at 4.3e11 and 1.3e12 (D/N 29 and 87), so that no budget is left empty.
    plan = plan_grid("smoke", ["models=[{arm: tiny, mdm: cpu-0.2m, pairing: compute},cpu-50k]",
                               "tokens_per_parameter=[3,100]"], runs_dir=str(tmp_path))
    pair = [r for r in plan.runs if r.model != "cpu-50k"]
    assert sorted({r.budget.flops_budget for r in pair}) == [1.3e12, 3.9e12]
    assert _check_compute_pairs(dataclasses.replace(plan, runs=pair)) == 2


def test_branched_compute_pair_has_a_trunk_and_a_warmup_per_model(tmp_path):
    plan = plan_grid("smoke", ["models=[{arm: tiny, mdm: cpu-0.2m, pairing: compute}]", "branching=true",
                               "schedule.kind=cooldown", "eval.at_fractions=[1.0]"], runs_dir=str(tmp_path))
    assert {(t.objective, t.model) for t in plan.trunks} == {("arm", "tiny"), ("mdm", "cpu-0.2m")}
    schedule = plan.grid_config.schedule
    for trunk in plan.trunks:
        members = [r for r in plan.runs if r.objective == trunk.objective]
        assert {r.budget.non_embedding_params for r in members} == {trunk.budget.non_embedding_params}
        assert {r.config["branching"]["trunk_dir"] for r in members} == {str(trunk.out_dir)}
        shortest = min(r.budget.steps for r in members)  # each group caps its warmup at its own shortest run
        warmup = min(schedule.warmup_steps, int(schedule.max_warmup_fraction * shortest))
        assert {r.config["schedule"]["warmup_steps"] for r in members + [trunk]} == {warmup}
        assert trunk.budget.steps == max(r.config["branching"]["branch_step"] for r in members)
    warmups = {t.objective: t.config["schedule"]["warmup_steps"] for t in plan.trunks}
    assert warmups["arm"] != warmups["mdm"]


def test_scaling_8b_is_the_paper_7b_8b_comparison(plans):
    from sweeps.profiles import load_profile

    plan = plans["scaling_8b"]
    budgets = sorted(plan.grid_config.budgets)
    assert budgets[0] == pytest.approx(1e21) and budgets[-1] == pytest.approx(1e23)
    exponents = [math.log10(b) for b in budgets]
    gaps = [b - a for a, b in zip(exponents, exponents[1:])]
    assert max(gaps) - min(gaps) < 0.01 and max(gaps) == pytest.approx(0.5, abs=0.01)  # two per decade
    assert {(r.objective, r.model) for r in plan.runs} == {("arm", "arm-7b"), ("mdm", "llada-8b")}
    assert _check_compute_pairs(plan) == len(budgets)
    assert min(r.budget.steps for r in plan.runs) >= 4000  # a few thousand steps at the smallest budget
    cfg = plan.runs[0].config
    t = cfg["trainer"]
    assert (t["seq_len"], t["global_batch_size"], t["micro_batch_size"]) == (4096, 1280, 4)
    assert (t["precision"], t["strategy"], t["activation_checkpointing"], t["loss_chunk_size"]) == \
        ("bf16-mixed", "fsdp2", True, 4096)
    assert cfg["eval"]["suite"] == "paper6" and cfg["schedule"]["kind"] == "wsd"
    profile = load_profile(plan.grid_config.cluster_profile)
    assert plan.profile_name == "h100-8x8" and profile.gpu_memory_gb == 80
    gpus = profile.nodes * profile.gpus_per_node
    assert (t["num_nodes"], t["devices"]) == (profile.nodes, profile.gpus_per_node)
    assert t["global_batch_size"] % (t["micro_batch_size"] * gpus) == 0  # whole accumulation steps


def test_scaling_1b_is_the_paper_study(plans):
    plan = plans["scaling_1b"]
    budgets = sorted(plan.grid_config.budgets)
    assert len(budgets) >= 7
    assert budgets[0] == pytest.approx(1e20) and budgets[-1] == pytest.approx(1e23)
    steps = [math.log10(b) for b in budgets]
    gaps = [b - a for a, b in zip(steps, steps[1:])]
    assert max(gaps) - min(gaps) < 0.01  # log-spaced
    assert {(r.objective, r.model) for r in plan.runs} == {("arm", "arm-1b"), ("mdm", "llada-1b")}
    cfg = plan.runs[0].config
    assert cfg["trainer"]["seq_len"] == 4096
    assert cfg["trainer"]["global_batch_size"] == 1280
    assert cfg["schedule"]["kind"] == "wsd"
    assert cfg["optim"]["weight_decay"] == pytest.approx(0.1)
    assert cfg["eval"]["suite"] == "paper6"
    assert cfg["model"]["n_layers"] == 22 and cfg["model"]["d_model"] == 2048  # LLaDA Table 5


def test_isoflop_is_a_ladder_at_each_budget(plans):
    plan = plans["isoflop"]
    sizes_per_budget: dict = {}
    for run in plan.runs:
        sizes_per_budget.setdefault(run.budget.flops_budget, set()).add(run.budget.non_embedding_params)
    assert len(sizes_per_budget) >= 3
    assert all(len(sizes) >= 4 for sizes in sizes_per_budget.values())


def test_ladder_is_an_isoflop_layout_of_both_objectives_with_seeds_at_its_cheapest_budgets(plans):
    plan = plans["ladder"]
    budgets = sorted(plan.grid_config.budgets)
    assert len(budgets) >= 6 and math.log10(budgets[-1] / budgets[0]) >= 1.5
    points: dict = {}
    for run in plan.runs:
        points.setdefault((run.budget.flops_budget, run.model, run.seed), set()).add(run.objective)
        low, high = plan.grid_config.tokens_per_parameter
        assert low <= run.budget.tokens_per_param * 1.01 and run.budget.tokens_per_param <= high * 1.01
    assert all(objectives == {"arm", "mdm"} for objectives in points.values())
    for budget in budgets:
        assert len({m for b, m, s in points if b == budget and s == 0}) >= 3, budget
        extra = {s for b, m, s in points if b == budget} - {0}
        assert extra == ({1} if budget in budgets[:2] else set()), budget
    assert plan.runs[0].config["data"]["source"] == "files"
    assert plan.runs[0].config["trainer"]["accelerator"] == "cpu"


def test_tokens_per_parameter_window_trains_exactly_the_pairs_inside_it(tmp_path):
    sizes = ["cpu-25k", "cpu-50k", "tiny", "cpu-0.2m"]
    budgets = [2e11, 8e11, 3.2e12]
    window = (4.0, 60.0)
    plan = plan_grid("smoke", [f"models=[{','.join(sizes)}]", f"budgets=[{','.join(map(str, budgets))}]",
                               f"tokens_per_parameter=[{window[0]},{window[1]}]"], runs_dir=str(tmp_path))
    inside = {(name, b) for name in sizes for b in budgets
              if window[0] <= b / (6 * preset(name).non_embedding_params ** 2) <= window[1]}
    assert {(r.model, r.budget.flops_budget) for r in plan.runs} == inside
    assert 0 < len(inside) < len(sizes) * len(budgets)  # the window drops some pairs and keeps some
    assert len(plan.runs) == 2 * len(inside)  # both objectives at every kept pair
    full = plan_grid("smoke", [f"models=[{','.join(sizes)}]", f"budgets=[{','.join(map(str, budgets))}]"],
                     runs_dir=str(tmp_path))
    assert len(full.runs) == 2 * len(sizes) * len(budgets)
    kept = {r.key for r in plan.runs}
    assert kept <= {r.key for r in full.runs}  # the window changes which runs exist, not what they are


def test_smoke_is_cpu_and_toy_world(plans):
    plan = plans["smoke"]
    assert len(plan.grid_config.budgets) >= 3
    cfg = plan.runs[0].config
    assert cfg["data"]["source"] == "toyworld"
    assert cfg["trainer"]["accelerator"] == "cpu" and cfg["trainer"]["precision"] == "32-true"
    assert cfg["eval"]["suite"] == "toyworld"
    assert max(r.budget.non_embedding_params for r in plan.runs) < 1_000_000


def test_extra_seeds_run_only_at_their_budgets(tmp_path):
    plan = plan_grid("smoke", ["budgets=[4.3e11,1.3e12]", "extra_seeds=[1,2]", "extra_seed_budgets=[4.3e11]"],
                     runs_dir=str(tmp_path))
    assert sorted((r.objective, r.budget.flops_budget, r.seed) for r in plan.runs) == sorted(
        [(o, 4.3e11, s) for o in ("arm", "mdm") for s in (0, 1, 2)] + [(o, 1.3e12, 0) for o in ("arm", "mdm")])
    twins = {(r.budget.flops_budget, r.seed): r for r in plan.runs if r.objective == "arm"}
    assert twins[(4.3e11, 1)].config["seed"] == 1 and twins[(4.3e11, 1)].name == "arm-tiny-4.3e+11-s1"
    assert len({r.key for r in plan.runs}) == len(plan.runs)


def test_overrides_reach_every_run(tmp_path):
    plan = plan_grid("smoke", ["trainer.precision=bf16-mixed", "budgets=[1e11,1e12]"], runs_dir=str(tmp_path))
    assert {r.config["trainer"]["precision"] for r in plan.runs} == {"bf16-mixed"}
    assert {r.budget.flops_budget for r in plan.runs} == {1e11, 1e12}


def test_run_names_carry_the_budget_as_given(tmp_path):
    plan = plan_grid("smoke", ["models=[tiny]", "budgets=[1.5e11,1e12]"], runs_dir=str(tmp_path))
    assert sorted(r.name for r in plan.runs) == ["arm-tiny-1.5e+11", "arm-tiny-1e+12", "mdm-tiny-1.5e+11", "mdm-tiny-1e+12"]


def test_run_names_are_distinct_for_close_budgets_and_several_seeds(tmp_path):
    from studies.tracking import run_display_name

    plan = plan_grid("smoke", ["models=[tiny]", "budgets=[1e12,1.3e12,1.0001e12]", "seeds=[0,1]"],
                     runs_dir=str(tmp_path))
    names = [run_display_name(r.config) for r in plan.runs]
    assert len(set(names)) == len(names) == 12
    assert "smoke/mdm-tiny-1.0001e+12-s1" in names and "smoke/arm-tiny-1.3e+12-s0" in names


def test_only_filters(tmp_path):
    plan = plan_grid("scaling_1b", only=["objective=mdm", "budget=1e20,1e21"], runs_dir=str(tmp_path))
    assert [(r.objective, r.budget.flops_budget) for r in plan.runs] == [("mdm", 1e20), ("mdm", 1e21)]
    with pytest.raises(ValueError, match="no run of the grid matches"):
        plan_grid("scaling_1b", only=["model=arm-7b"], runs_dir=str(tmp_path))
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        plan_grid("scaling_1b", only=["size=1b"], runs_dir=str(tmp_path))


@pytest.mark.parametrize(
    ("grid", "overrides", "message"),
    [
        ("scaling_2b", [], r"unknown grid 'scaling_2b'.*Known grids: .*isoflop.*scaling_1b.*smoke"),
        ("smoke", ["models=[tiny,huge-9b]"], r"unknown model preset 'huge-9b'.*Known presets"),
        ("smoke", ["budgets=[1e6]"], r"too small for one optimizer step.*smallest budget"),
        ("smoke", ["budgets=[-1e12]"], r"budget -1e\+12 must be a finite positive"),
        ("smoke", ["budgets=[lots]"], r"budgets=\[lots\].*could not be converted"),
        ("smoke", ["trainer.precison=bf16-mixed"], r"'precison' is not a key of trainer.*Did you mean precision"),
        ("smoke", ["budget=[1e20]"], r"'budget' is not a key of the grid.*Did you mean budgets"),
        ("smoke", ["data.toyworld.people=10"], r"'people' is not a key of data.toyworld"),
        ("smoke", ["objectives=[arm,ar]"], r"objectives must be a non-empty subset"),
        ("smoke", ["cluster_profile=moon"], r"unknown cluster profile 'moon'.*Known profiles"),
        ("smoke", ["trainer.global_batch_size=15"], r"not a multiple of micro_batch_size"),
        ("smoke", ["models=[{arm: arm-7b, mdm: llada-8b}]"],
         r"twins at one grid point must share.*add pairing: compute to the entry \(\{arm: arm-7b, mdm: llada-8b, "
         r"pairing: compute\}"),
        ("smoke", ["models=[{arm: tiny, mdm: cpu-0.2m}]"],
         r"tiny/cpu-0.2m: the arm and mdm presets differ in \['n_layers'\].*add pairing: compute"),
        ("smoke", ["models=[{arm: arm-7b, mdm: llada-8b, pairing: comput}]"],
         r"pairing 'comput' is not one of twins, compute. Did you mean compute\?"),
        ("smoke", ["models=[{arm: arm-7b, mdm: llada-8b, pairing: null}]"],
         r"'pairing': None\}: Incompatible value"),
        ("smoke", ["models=[{arm: tiny, mdm: cpu-0.2m, pairing: compute, label: pair}]"],
         r"label 'pair' would name both architectures.*drop label"),
        ("smoke", ["models=[{arm: arm-1b, mdm: llada-1b, pairing: compute}]"],
         r"pairing: compute is for an ARM and an MDM of different architectures.*drop pairing"),
        ("smoke", ["models=[{preset: tiny, size: 3}]"], r"models entry"),
        ("smoke", ["trainer.seq_len"], r"not of the form key=value"),
        ("smoke", ["extra_seeds=[1]"], r"extra_seeds and extra_seed_budgets go together"),
        ("smoke", ["extra_seeds=[0]", "extra_seed_budgets=[4.3e11]"], r"not among seeds \[0\]"),
        ("smoke", ["extra_seeds=[1]", "extra_seed_budgets=[5e11]"], r"\[5e\+11\] are not among the grid's budgets"),
        ("smoke", ["tokens_per_parameter=[110,3]"], r"tokens_per_parameter=\[110.0, 3.0\] must be two positive"),
        ("smoke", ["tokens_per_parameter=[0,3]"], r"must be two positive numbers \[low, high\]"),
        ("smoke", ["tokens_per_parameter=[3]"], r"must be two positive numbers"),
        ("smoke", ["models=[tiny]", "budgets=[4.3e11,3.9e12]", "tokens_per_parameter=[3,20]"],
         r"leaves no model at budget\(s\) 3.9e\+12: N in \[.*\] \(the grid's sizes: 92,480\): widen the window"),
    ],
)
def test_bad_grid_input_is_a_clear_error(tmp_path, grid, overrides, message):
    with pytest.raises(ValueError, match=message):
        plan_grid(grid, overrides, runs_dir=str(tmp_path))
    assert not any(tmp_path.iterdir())  # planning writes nothing


def test_typo_in_a_grid_file_is_an_error(tmp_path):
    text = (Path(__file__).resolve().parents[2] / "sweeps/grids/smoke.yaml").read_text()
    bad = tmp_path / "typo.yaml"
    bad.write_text(text.replace("global_batch_size:", "global_bacth_size:"))
    with pytest.raises(ValueError, match="global_bacth_size"):
        plan_grid(str(bad), runs_dir=str(tmp_path))


def test_cluster_profile_missing_a_required_field(tmp_path):
    profile = tmp_path / "half.yaml"
    profile.write_text("partition: gpu\ntime_min: 60\nnodes: 1\ngpus_per_node: 8\ncpus_per_task: 8\nmem_gb: 100\n")
    with pytest.raises(ValueError, match=r"missing required field\(s\): device, mfu, peak_tflops"):
        plan_grid("smoke", runs_dir=str(tmp_path), profile=str(profile))


def test_model_entries_with_overrides_and_seeds(tmp_path):
    overrides = ["models=[{preset: cpu-1m, label: cpu-1m-deep, overrides: {n_layers: 8}}]", "seeds=[0,1]",
                 "budgets=[1e13]"]
    plan = plan_grid("smoke", overrides, runs_dir=str(tmp_path))
    deep = preset("cpu-1m", n_layers=8)
    assert {r.model for r in plan.runs} == {"cpu-1m-deep"}
    assert {r.budget.non_embedding_params for r in plan.runs} == {deep.non_embedding_params}
    assert deep.non_embedding_params > preset("cpu-1m").non_embedding_params
    assert sorted((r.objective, r.seed) for r in plan.runs) == [("arm", 0), ("arm", 1), ("mdm", 0), ("mdm", 1)]
    assert len({r.key for r in plan.runs}) == 4 and all(r.name.endswith(f"-s{r.seed}") for r in plan.runs)
    with pytest.raises(ValueError, match="causal is set by the objective"):
        plan_grid("smoke", ["models=[{preset: tiny, overrides: {causal: false}}]"], runs_dir=str(tmp_path))


def test_single_objective_entries(tmp_path):
    plan = plan_grid("scaling_1b", ["models=[{arm: arm-7b}, {mdm: llada-8b}]", "budgets=[1e22]"],
                     runs_dir=str(tmp_path))
    assert sorted((r.objective, r.model) for r in plan.runs) == [("arm", "arm-7b"), ("mdm", "llada-8b")]
