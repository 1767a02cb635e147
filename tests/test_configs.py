"""Hardware profiles: accelerate configs, YAML recipes, and the validation that runs before a launch.

Everything here is real: accelerate's own config loader and launch-argument resolution, TRL's parser over
our dataclasses, a real two-process gloo group started by `accelerate launch`. DeepSpeed and FSDP configs
are only parsed here (no GPU); they run on the GPU machine in the GPU issue.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
import socket
import subprocess
import sys

import pytest
import yaml
from _tiny import REPO, run

from math_grpo.errors import ConfigError
from math_grpo.launch_checks import validate_launch
from math_grpo.launch_plan import parse_recipe_for_launch
from math_grpo.recipe_checks import validate_grpo_config

ACCELERATE_CONFIGS = sorted(glob.glob(os.path.join(REPO, "accelerate_configs", "*.yaml")))
# Training recipes; evaluate*.yaml are recipes/evaluate.py's (parsed in tests/test_benchmarks.py).
RECIPES = sorted(p for p in glob.glob(os.path.join(REPO, "recipes", "**", "*.yaml"), recursive=True)
                 if not os.path.basename(p).startswith("evaluate"))
EXPECTED_ACCELERATE = {"single_gpu", "multi_gpu", "zero2", "zero3", "zero3_offload", "fsdp2", "cpu", "cpu_ddp"}
EXPECTED_QWEN = {"grpo_2gpu", "grpo_1gpu", "grpo_1gpu_colocate", "grpo_8gpu", "grpo_8gpu_colocate",
                 "grpo_multinode", "sft"}
# Overrides that let a GPU recipe parse on this CPU machine: TrainingArguments refuses bf16 without a GPU.
CPU_PARSE = ["--bf16", "false", "--use_cpu", "true", "--gradient_checkpointing", "false"]
# Training processes each Qwen recipe is written for (its header says how it is launched).
QWEN_WORLD = {"grpo_2gpu": 1, "grpo_1gpu": 1, "grpo_1gpu_colocate": 1, "grpo_8gpu": 7, "grpo_8gpu_colocate": 8,
              "grpo_multinode": 16}


def _name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _rel(path: str) -> str:
    return os.path.relpath(path, REPO)


# ---------------------------------------------------------------------------------------------------------
# accelerate configs
# ---------------------------------------------------------------------------------------------------------


def test_all_accelerate_configs_exist():
    assert EXPECTED_ACCELERATE <= {_name(p) for p in ACCELERATE_CONFIGS}


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=_rel)
def test_accelerate_config_loads_and_num_processes_overridable(path):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert text.startswith("#"), f"{_rel(path)}: must start with a comment saying when to use it"
    cfg = load_config_from_file(path)  # accelerate's own loader: unknown top-level keys raise
    assert cfg.num_processes >= 1
    assert cfg.use_cpu == _name(path).startswith("cpu")

    # The resolution `accelerate launch --config_file X` does; a command-line --num_processes wins.
    for cli, expected in (([], cfg.num_processes), (["--num_processes", "3"], 3)):
        args = launch_command_parser().parse_args(["--config_file", path, *cli, "train.py"])
        args, _, _ = _validate_launch_command(args)
        assert args.num_processes == expected
    # Every DeepSpeed / FSDP key must be one accelerate knows (it copies them onto the launch arguments).
    for key in (cfg.deepspeed_config or {}):
        assert hasattr(args, key), f"{_rel(path)}: deepspeed_config.{key} is not an accelerate option"
    for key in (cfg.fsdp_config or {}):
        assert hasattr(args, key if key.startswith("fsdp") else f"fsdp_{key}"), f"{_rel(path)}: fsdp_config.{key}"
    if _name(path).startswith("zero"):
        assert args.use_deepspeed and args.zero_stage == int(_name(path)[4])
    if _name(path) == "zero3_offload":
        assert cfg.deepspeed_config["offload_optimizer_device"] == "cpu"
    if _name(path) == "fsdp2":
        assert args.use_fsdp and int(args.fsdp_version) == 2


def test_cpu_ddp_two_processes_all_reduce(tmp_path):
    """`accelerate launch` with cpu_ddp.yaml starts two processes in one gloo group that can all_reduce."""
    script = tmp_path / "all_reduce.py"
    script.write_text(
        "import torch, torch.distributed as dist\n"
        "from accelerate import PartialState\n"
        "state = PartialState(cpu=True)\n"
        "t = torch.tensor([float(state.process_index + 1)])\n"
        "dist.all_reduce(t)\n"
        "print(f'rank={state.process_index} world={state.num_processes} backend={dist.get_backend()} '\n"
        "      f'sum={t.item():g}', flush=True)\n"
        "state.destroy_process_group()\n"
    )
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    proc = run([accelerate, "launch", "--config_file", os.path.join(REPO, "accelerate_configs", "cpu_ddp.yaml"),
                "--main_process_port", "0", str(script)], timeout=300)
    # two processes share one stdout: their lines can interleave, so find the reports anywhere in it
    lines = sorted(re.findall(r"rank=\d+ world=\d+ backend=\w+ sum=\d+", proc.stdout))
    assert lines == ["rank=0 world=2 backend=gloo sum=3", "rank=1 world=2 backend=gloo sum=3"], proc.stdout


# ---------------------------------------------------------------------------------------------------------
# YAML recipes
# ---------------------------------------------------------------------------------------------------------


def _types_for(path: str) -> tuple[type, ...]:
    from trl import GRPOConfig, ModelConfig, SFTConfig

    from math_grpo.configs import GRPOScriptArguments, SFTScriptArguments

    name = _name(path)
    if name.startswith("grpo"):
        return GRPOScriptArguments, GRPOConfig, ModelConfig
    if name.startswith("sft"):
        return SFTScriptArguments, SFTConfig, ModelConfig
    raise AssertionError(f"{_rel(path)}: recipe names start with grpo or sft (that picks the parser)")


def test_all_qwen_recipes_exist():
    qwen = {_name(p) for p in RECIPES if os.sep + "qwen2.5-math-1.5b" + os.sep in p}
    assert EXPECTED_QWEN <= qwen


@pytest.mark.parametrize("path", RECIPES, ids=_rel)
def test_recipe_fields_exist_and_parse(path):
    from math_grpo.cli import parse_recipe

    types = _types_for(path)
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    assert isinstance(raw, dict) and raw, f"{_rel(path)}: empty recipe"
    # Direct check of names against the dataclasses (independent of how the parser reports them).
    known = {f.name for t in types for f in dataclasses.fields(t)}
    assert not sorted(set(raw) - known), f"{_rel(path)}: unknown fields {sorted(set(raw) - known)}"
    # The real parser (TRL's TrlParser through ours): types, choices and __post_init__ checks. GPU-only
    # values are switched off for this parse only; nothing else is faked.
    script_args, training_args, model_args = parse_recipe(types, ["--config", path, *CPU_PARSE])
    for key, value in raw.items():
        if key in ("bf16", "use_cpu", "gradient_checkpointing"):
            continue
        obj = next(o for o in (script_args, training_args, model_args) if hasattr(o, key))
        got = getattr(obj, key)
        got = getattr(got, "value", got)
        if isinstance(value, (int, float, bool, str)) and not isinstance(got, (list, dict)):
            assert got == value or str(got) == str(value), f"{_rel(path)}: {key}: {got!r} != {value!r}"


@pytest.mark.parametrize("path", [p for p in RECIPES if _name(p) in QWEN_WORLD], ids=_rel)
def test_qwen_grpo_recipes_pass_validation_for_their_world_size(path):
    """Each GPU recipe is valid for the number of training processes it is written for; the only
    complaint allowed on this CPU machine is NCCL sync (it needs CUDA)."""
    script_args, training_args, model_args = parse_recipe_for_launch(
        path, [*CPU_PARSE, "--model_name_or_path", "Qwen/Qwen2.5-Math-1.5B"])
    assert training_args.num_generations == 4 and training_args.beta == 0.05
    assert training_args.learning_rate == 5e-7
    assert script_args.reward_funcs == ["r1_zero"] and training_args.use_vllm
    try:
        validate_grpo_config(script_args, training_args, model_args, world_size=QWEN_WORLD[_name(path)])
    except ConfigError as exc:
        rest = [p for p in exc.problems if not p.startswith("weight_sync_backend: nccl needs CUDA")]
        assert not rest, rest
    with open(path, encoding="utf-8") as f:
        header = f.read().split("\n\n", 1)[0]
    assert "Expected" in header and ("not measured" in header or "measured" in header), \
        f"{_rel(path)}: the header must document expected memory and step time"


def test_main_recipe_sets_important_fields_explicitly():
    with open(os.path.join(REPO, "recipes", "qwen2.5-math-1.5b", "grpo_2gpu.yaml"), encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    for key in ("loss_type", "scale_rewards", "max_completion_length", "mask_truncated_completions",
                "temperature", "num_iterations", "epsilon", "logging_steps", "save_steps", "eval_steps",
                "vllm_mode", "weight_sync_backend", "benchmarks", "eval_max_samples", "report_to", "bf16",
                "gradient_checkpointing", "num_generations", "beta", "learning_rate", "model_name_or_path"):
        assert key in raw, key
    assert raw["model_name_or_path"] == "results/checkpoints/checkpoint_6000"
    assert raw["vllm_mode"] == "server" and raw["weight_sync_backend"] == "nccl"
    assert raw["benchmarks"] == ["math500", "gsm8k"] and raw["report_to"] == ["wandb"]
    assert raw["per_device_train_batch_size"] * raw["gradient_accumulation_steps"] == 16


# ---------------------------------------------------------------------------------------------------------
# Validation failures: each names the field(s) at fault
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def recipe(tmp_path):
    """A small CPU GRPO recipe on disk (a model folder with a config.json and a data file), as a function
    returning the parsed (script_args, training_args, model_args) for given overrides."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "qwen2", "max_position_embeddings": 512}))
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"problem": "2+2?", "answer": "4"}) + "\n")
    path = tmp_path / "grpo_test.yaml"
    path.write_text(yaml.safe_dump({
        "model_name_or_path": str(model), "dataset_name": str(data), "reward_funcs": ["r1_zero"],
        "per_device_train_batch_size": 8, "num_generations": 4, "max_completion_length": 64,
        "bf16": False, "use_cpu": True, "gradient_checkpointing": False, "use_vllm": True, "vllm_mode": "server",
        "weight_sync_backend": "filesystem", "vllm_server_port": 8000, "benchmarks": [f"mine={bench}"],
        "eval_max_tokens": 64, "report_to": "none",
    }))

    def make(*overrides: str):
        return parse_recipe_for_launch(str(path), list(overrides))

    make.path = str(path)
    make.model = str(model)
    return make


def _problem(fn, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg, "the message must be one line"
    return msg


def test_valid_recipe_passes(recipe):
    validate_grpo_config(*recipe(), world_size=1)
    validate_grpo_config(*recipe(), world_size=2)


def test_batch_not_divisible_by_num_generations(recipe):
    msg = _problem(validate_grpo_config, *recipe("--per_device_train_batch_size", "6"), world_size=1)
    assert "num_generations (4)" in msg and "per_device_train_batch_size (6)" in msg and "multiple of 4" in msg
    # With 2 processes every multiple of 2 per device makes whole groups; the fix says so.
    msg = _problem(validate_grpo_config, *recipe("--per_device_train_batch_size", "3"), world_size=2)
    assert "= 6" in msg and "multiple of 2" in msg


def test_batch_across_processes(recipe):
    args = recipe("--per_device_train_batch_size", "2")
    validate_grpo_config(*args, world_size=2)  # 2 x 2 = 4 completions: one whole group
    msg = _problem(validate_grpo_config, *args, world_size=3)  # 2 x 3 = 6: a group would be split
    assert "num_generations (4)" in msg and "3 process(es)" in msg and "per_device_train_batch_size" in msg


def test_generation_batch_size_not_multiple_of_global_batch(recipe):
    msg = _problem(validate_grpo_config, *recipe("--generation_batch_size", "20"), world_size=1)
    assert "generation_batch_size (20)" in msg and "per_device_train_batch_size (8)" in msg


def test_generation_batch_size_not_multiple_of_num_generations(recipe):
    msg = _problem(validate_grpo_config, *recipe("--per_device_train_batch_size", "2",
                                                 "--generation_batch_size", "6"), world_size=1)
    assert "num_generations (4)" in msg and "generation_batch_size (6)" in msg


def test_num_generations_below_two(recipe):
    script_args, training_args, model_args = recipe()
    training_args.num_generations = 1  # TRL's own parse refuses 1 too; this is our earlier, clearer check
    msg = _problem(validate_grpo_config, script_args, training_args, model_args, world_size=1)
    assert "num_generations (1)" in msg and "at least 2" in msg


def test_eval_batch_not_divisible(recipe):
    script_args, training_args, model_args = recipe()
    training_args.do_eval, training_args.eval_strategy, training_args.per_device_eval_batch_size = True, "steps", 3
    msg = _problem(validate_grpo_config, script_args, training_args, model_args, world_size=1)
    assert "per_device_eval_batch_size (3)" in msg


def test_vllm_max_model_length_too_short(recipe):
    msg = _problem(validate_grpo_config, *recipe("--vllm_max_model_length", "64"), world_size=1)
    assert "vllm_max_model_length (64)" in msg and "max_completion_length (64)" in msg


def test_vllm_max_model_length_too_short_for_evaluation(recipe):
    msg = _problem(validate_grpo_config, *recipe("--vllm_max_model_length", "100", "--eval_max_tokens", "200"),
                   world_size=1)
    assert "vllm_max_model_length (100)" in msg and "eval_max_tokens (200)" in msg


def test_model_path_missing(recipe, tmp_path):
    missing = str(tmp_path / "no" / "such" / "checkpoint")
    msg = _problem(validate_grpo_config, *recipe("--model_name_or_path", missing), world_size=1)
    assert msg.startswith("model_name_or_path:") and missing in msg


def test_model_path_without_config_json(recipe, tmp_path):
    empty = tmp_path / "empty_model"
    empty.mkdir()
    msg = _problem(validate_grpo_config, *recipe("--model_name_or_path", str(empty)), world_size=1)
    assert "model_name_or_path" in msg and "config.json" in msg


def test_hub_ids_pass_without_download(recipe):
    validate_grpo_config(*recipe("--model_name_or_path", "Qwen/Qwen2.5-Math-1.5B"), world_size=1)
    validate_grpo_config(*recipe("--model_name_or_path", "gpt2"), world_size=1)


def test_benchmark_file_missing(recipe, tmp_path):
    missing = str(tmp_path / "nope.jsonl")
    msg = _problem(validate_grpo_config, *recipe("--benchmarks", f"gone={missing}"), world_size=1)
    assert msg.startswith("benchmarks:") and missing in msg


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_benchmark_file_unreadable(recipe, tmp_path):
    locked = tmp_path / "locked.jsonl"
    locked.write_text("{}\n")
    locked.chmod(0)
    try:
        msg = _problem(validate_grpo_config, *recipe("--benchmarks", f"locked={locked}"), world_size=1)
    finally:
        locked.chmod(0o644)
    assert "benchmarks" in msg and "not readable" in msg


def test_unknown_benchmark_name(recipe):
    msg = _problem(validate_grpo_config, *recipe("--benchmarks", "math9000"), world_size=1)
    assert "benchmarks" in msg and "math9000" in msg


# A field's own rules are checked where it is declared (configs.py __post_init__): the parse itself fails,
# naming the recipe file and the field.


def test_weight_sync_backend_unknown(recipe):
    msg = _problem(recipe, "--weight_sync_backend", "carrier_pigeon")
    assert msg.startswith(recipe.path) and "weight_sync_backend" in msg and "carrier_pigeon" in msg and "filesystem" in msg


def test_nccl_sync_needs_cuda(recipe):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    msg = _problem(validate_grpo_config, *recipe("--weight_sync_backend", "nccl"), world_size=1)
    assert "weight_sync_backend: nccl" in msg and "filesystem" in msg
    # Colocate mode does not use the backend at all: no complaint.
    validate_grpo_config(*recipe("--weight_sync_backend", "nccl", "--vllm_mode", "colocate",
                                 "--eval_backend", "transformers"), world_size=1)


def test_unknown_reward_name(recipe):
    msg = _problem(recipe, "--reward_funcs", "r1_zero", "vibes")
    assert "reward_funcs" in msg and "'vibes'" in msg and "r1_zero" in msg


@pytest.mark.parametrize("field", ["grader_mode", "eval_grader_mode"])
def test_grader_mode_unknown(recipe, field):
    msg = _problem(recipe, f"--{field}", "vibes")
    assert f"{field}: 'vibes'" in msg and "accurate" in msg


def test_several_problems_in_one_line(recipe):
    msg = _problem(recipe, "--grader_mode", "x", "--weight_sync_backend", "y")
    assert "grader_mode" in msg and "weight_sync_backend" in msg and "; " in msg


@pytest.mark.parametrize("kwargs, field", [({"eval_n": 0}, "eval_n"), ({"bad_rows": "keep"}, "bad_rows"),
                                           ({"prompt_template": "chat"}, "prompt_template"),
                                           ({"time_limit_s": -1.0}, "time_limit_s"),
                                           ({"eval_top_p": 1.5}, "eval_top_p")])
def test_dataclasses_check_their_own_fields(kwargs, field):
    from math_grpo.configs import GRPOScriptArguments, SFTScriptArguments

    for cls in (GRPOScriptArguments, SFTScriptArguments):
        with pytest.raises(ConfigError, match=f"^{field}: "):
            cls(**kwargs)
    assert GRPOScriptArguments().reward_funcs == ["r1_zero"]  # the defaults pass their own checks


# ---------------------------------------------------------------------------------------------------------
# Launch-level checks
# ---------------------------------------------------------------------------------------------------------


def test_launch_server_and_trainer_gpus_overlap_with_nccl(recipe):
    args = recipe("--weight_sync_backend", "nccl")
    msg = _problem(validate_launch, *args, server_gpus=[0], trainer_gpus=[0], check_port=False, visible_gpus=2)
    assert "--server-gpus 0" in msg and "--trainer-gpus 0" in msg and "nccl" in msg and "filesystem" in msg


def test_launch_same_gpu_is_fine_with_filesystem_sync(recipe):
    # visible_gpus=1 describes a one-GPU host; the recipe itself trains on CPU here (use_cpu), which the
    # GPU-set checks do not depend on.
    validate_launch(*recipe(), server_gpus=[0], trainer_gpus=[0], check_port=False, visible_gpus=1)


def test_launch_num_processes_vs_trainer_gpus(recipe):
    msg = _problem(validate_launch, *recipe(), server_gpus=[2], trainer_gpus=[0, 1], num_processes=3,
                   check_port=False, visible_gpus=3)
    assert "num_processes (3)" in msg and "trainer GPUs (2" in msg


def test_launch_single_process_config_with_several_processes(recipe):
    cfg = os.path.join(REPO, "accelerate_configs", "single_gpu.yaml")
    msg = _problem(validate_launch, *recipe(), server_gpus=[2], trainer_gpus=[0, 1], accelerate_config=cfg,
                   check_port=False, visible_gpus=3)
    assert "single_gpu.yaml" in msg and "distributed_type NO" in msg and "multi_gpu.yaml" in msg


def test_launch_gpu_ids_beyond_visible(recipe):
    msg = _problem(validate_launch, *recipe(), server_gpus=[5], trainer_gpus=[0], check_port=False, visible_gpus=2)
    assert "GPU ids 0,5" in msg and "2 GPU(s) are visible" in msg


def test_launch_num_processes_more_than_free_gpus(recipe):
    cfg = os.path.join(REPO, "accelerate_configs", "zero2.yaml")  # num_processes 8 in the file
    msg = _problem(validate_launch, *recipe(), server_gpus=[3], accelerate_config=cfg, check_port=False,
                   visible_gpus=4)
    assert "num_processes (8)" in msg and "GPUs left for training (3" in msg


def test_launch_port_in_use(recipe):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        msg = _problem(validate_launch, *recipe("--vllm_server_port", str(port)), port=port, visible_gpus=0)
    assert f"port {port}" in msg and "in use" in msg


def test_launch_port_differs_from_recipe(recipe):
    msg = _problem(validate_launch, *recipe(), port=8123, check_port=False, visible_gpus=0)
    assert "--port 8123" in msg and "vllm_server_port is 8000" in msg


def test_launch_server_max_model_len_too_short(recipe):
    msg = _problem(validate_launch, *recipe(), max_model_len=32, check_port=False, visible_gpus=0)
    assert "the server's max-model-len (32)" in msg and "max_completion_length (64)" in msg


def test_launch_server_context_capped_by_the_model(recipe):
    # The model's config says 512 positions: the server cannot hold 64 + 1024 evaluation tokens.
    msg = _problem(validate_launch, *recipe("--eval_max_tokens", "1024"), check_port=False, visible_gpus=0)
    assert "max-model-len (512)" in msg and "eval_max_tokens (1024)" in msg


# ---------------------------------------------------------------------------------------------------------
# The launcher's --check (the Slurm script runs it before it starts anything)
# ---------------------------------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "math_grpo.launch", "--check", *args], timeout=120, check=False)


def test_cli_ok_and_batch_checked_for_the_launch_world_size(recipe):
    # 2 completions per device is not a whole group for 1 process (TRL would refuse it when parsing outside
    # the launch), but it is for the 2 processes this launch will have.
    proc = _cli("--config", recipe.path, "--no-port-check", "--num-processes", "2",
                "--per_device_train_batch_size", "2")
    assert proc.returncode == 0, proc.stderr
    assert "config ok" in proc.stdout and "2 training process(es)" in proc.stdout
    proc = _cli("--config", recipe.path, "--no-port-check", "--num-processes", "3",
                "--per_device_train_batch_size", "2")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("error: num_generations (4)") and "3 process(es)" in lines[-1]


def test_cli_gpu_overlap_exit_2(recipe):
    proc = _cli("--config", recipe.path, "--no-port-check", "--server-gpus", "0", "--trainer-gpus", "0",
                "--weight_sync_backend", "nccl")
    assert proc.returncode == 2 and "nccl" in proc.stderr and "--server-gpus 0" in proc.stderr


@pytest.mark.parametrize("overrides, culprit", [
    (["--max_steps", "abc"], "argument --max_steps/--max-steps: invalid int value: 'abc'"),
    (["--benchmarks"], "argument --benchmarks: expected at least one argument"),
    (["--reward_funcs", "r1_zero", "--reward_funcs", "drgrpo"], "--reward_funcs given more than once"),
])
def test_bad_command_line_value_is_one_line_naming_the_flag(recipe, overrides, culprit):
    """Not argparse's usage of every field (hundreds of lines) before the error, nor a list flag's earlier use
    dropped without a word."""
    from math_grpo.errors import MathGRPOError

    with pytest.raises(MathGRPOError) as info:
        recipe(*overrides)
    assert "\n" not in str(info.value) and culprit in str(info.value), info.value


def test_cli_unknown_recipe_field_exit_2(recipe):
    proc = _cli("--config", recipe.path, "--no-port-check", "--learnin_rate", "1e-6")
    assert proc.returncode == 2 and "learnin_rate" in proc.stderr


def test_cli_bf16_on_cpu_says_what_to_do(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    path = os.path.join(REPO, "recipes", "qwen2.5-math-1.5b", "grpo_2gpu.yaml")
    proc = _cli("--config", path, "--no-port-check")
    assert proc.returncode == 2 and "bf16" in proc.stderr and "--use_cpu true" in proc.stderr


# ---------------------------------------------------------------------------------------------------------
# Slurm
# ---------------------------------------------------------------------------------------------------------


def test_slurm_scripts_parse():
    for name in ("grpo.sbatch", "server.sh", "train.sh"):
        proc = run(["bash", "-n", os.path.join(REPO, "launch", "slurm", name)], check=False)
        assert proc.returncode == 0, proc.stderr


def test_slurm_dry_run_plans_server_and_multinode_training():
    """DRY_RUN=1 outside Slurm: each role's launcher (`--dry-run`: the recipe parsed, the commands planned),
    no process started."""
    recipe = os.path.join(REPO, "recipes", "qwen2.5-math-1.5b", "grpo_multinode.yaml")
    proc = run(["bash", os.path.join(REPO, "launch", "slurm", "grpo.sbatch"), recipe, *CPU_PARSE],
               env={"SLURM_JOB_NODELIST": "srv1,srv2,trn1,trn2", "SERVER_NODES": "2", "VLLM_TP": "2",
                    "DRY_RUN": "1", "PATH": "/usr/bin:/bin:" + os.path.dirname(sys.executable),
                    "PYTHON": sys.executable}, timeout=180)
    out = proc.stdout
    assert "vLLM TP=2 x DP=8 at http://srv1:8000" in out
    assert "--tensor-parallel-size 2" in out and "--data-parallel-size 8" in out
    assert "--host srv1 " in out and "0.0.0.0" not in out  # the server node's own address, not every interface
    assert "listen on srv1:8000, not loopback only" in proc.stderr  # said in one line at start
    assert "--num-processes 16 --num-machines 2 --server-running" in out  # validation with the real world size
    train = [line for line in out.splitlines() if line.startswith("[dry-run] train")]
    assert len(train) == 2
    for rank, (node, line) in enumerate(zip(("trn1", "trn2"), train)):
        assert line.startswith(f"[dry-run] train {node}:") and f"--machine_rank {rank}" in line
        assert "--num_machines 2 --num_processes 16" in line and "--main_process_ip trn1" in line
        assert "--vllm_server_base_url http://srv1:8000" in line
