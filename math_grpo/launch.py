"""The GRPO launcher: start the vLLM server a recipe asks for, train with `accelerate launch recipes/grpo.py`,
and always stop the server (exit, error, Ctrl-C, SIGTERM). Every launch goes through here, one machine or a
Slurm job (launch/slurm/grpo.sbatch runs it once per node, in a role), so teardown, grace periods and
messages exist once.

    python -m math_grpo.launch [launcher options] RECIPE.yaml [recipe overrides, e.g. --max_steps 10]

A launch, top to bottom (`Launch.run`):
  1. `parse_options`: this module's one option parser (launcher options use dashes, recipe fields underscores)
  2. `launch_plan.parse_recipe_for_launch`: the recipe, parsed once (each field checked where it is declared)
  3. `launch_checks.validate_launch`: the launch checks (GPU sets, accelerate config, port, the server's
     context), which run `recipe_checks.validate_grpo_config`, the recipe checks (batch vs groups from TRL's own
     batch arithmetic, context, paths); every problem in one `error:` line, exit 2 (`--check` stops here)
  4. `launch_plan.plan_launch`: the run dir and the server's command (`--dry-run` prints the commands, stops)
  5. the role: `both` starts the server (restarted by `server_supervisor` when it dies) and trains beside it;
     `server` only serves until stopped; `trainer` trains against `--server-url` (nothing started or stopped)
  6. teardown (`main`'s finally): training gets SIGTERM and TRAIN_STOP_TIMEOUT (300 s) to checkpoint, then the
     server SIGTERM and 15 s (`ServerProcess.stop`)

Launcher options:
  --role ROLE              both (default), server (start the server, keep it up until stopped) or trainer
                           (train against --server-url; with --num-machines, one node of a multi-node run)
  --server-gpus IDS        GPU ids for the vLLM server, e.g. "1" (default: the last GPU when there are >= 2,
                           every GPU in the server role; "cpu" or no GPU: the CPU build of vLLM)
  --trainer-gpus IDS       GPU ids for training (default: the GPUs the server does not use)
  --port PORT              server port (default: the recipe's vllm_server_port, else 8000)
  --host HOST              server address (default 127.0.0.1: loopback only)
  --accelerate-config F    accelerate config (default: cpu.yaml without GPUs, cpu_ddp.yaml for several CPU
                           processes, single_gpu.yaml for one training GPU, zero2.yaml for several; all in
                           accelerate_configs/)
  --health-timeout S       seconds to wait for the server's /health (default: max(recipe's
                           vllm_server_timeout, 60); a CPU start takes about 90 s)
  --server-url URL         use a server that is already running (nothing is started or stopped)
  --server-restarts N      restart the server this launcher started when it dies, at most N times (default 3;
                           0: a dead server ends the run); the trainer waits, re-pushes the weights, goes on
  --kv-cache-bytes N       CPU build: KV cache size (default 512 MiB)
  --tensor-parallel-size N the server's tensor parallel size (default: its number of GPUs)
  --max-model-len N        the server's context (default: from the recipe and the model)
  --vllm-args "ARGS"       more arguments for `vllm serve` (e.g. data parallel flags; --headless: an engine
                           node of a multi-node server, which serves no /health)
  --num-processes N        training processes in all (default: the trainer GPUs, else 1)
  --num-machines M         training nodes (default 1); with --machine-rank R, --main-process-ip H and
                           --main-process-port P this node joins a multi-node `accelerate launch`
  --check                  only check the recipe and this launch (exit 0, or 2 with a one-line error)
  --no-port-check          skip the free-port check (--server-running: the same, the server is up)
  --dry-run                print the server and training commands this launch would run; start nothing
The server log goes to RUN_DIR/server.log (RUN_DIR: the recipe's output_dir, else output_root/run_name).
`bash launch/grpo.sh` is this launcher.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import NoReturn

from math_grpo.cli import run_cli
from math_grpo.configs import uses_server
from math_grpo.errors import MathGRPOError
from math_grpo.launch_checks import parse_gpu_ids, validate_launch
from math_grpo.launch_plan import LaunchPlan, check_summary, parse_recipe_for_launch, plan_launch
from math_grpo.processes import group_alive, signal_members, stop_process_group, wait_group
from math_grpo.server_recovery import STATUS_ENV
from math_grpo.server_supervisor import ServerSupervisor
from math_grpo.vllm_server import DEFAULT_HOST, ServerProcess, VLLMServerClient

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOOPBACK = ("127.0.0.1", "localhost", "::1")
TRAIN_STOP_TIMEOUT_S = float(os.environ.get("TRAIN_STOP_TIMEOUT", 300))  # a checkpoint at the end of the step
ROLES = ("both", "server", "trainer")


# -- 1. options ---------------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one `MathGRPOError` line naming the option (not a usage screen, exit 2)."""

    def error(self, message: str) -> NoReturn:
        option = message.split(":", 1)[0].replace("argument ", "").split("/")[0]
        if "expected one argument" in message:
            raise MathGRPOError(f"{option} needs a value (see --help)")
        raise MathGRPOError(f"{message} (see --help)")


def _parser() -> _Parser:
    p = _Parser(prog="python -m math_grpo.launch", add_help=False, allow_abbrev=False)
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("--config", dest="config", default="")  # the recipe, as `--config RECIPE.yaml` also
    p.add_argument("--role", choices=ROLES, default="both")
    for name in ("--server-gpus", "--trainer-gpus", "--host", "--accelerate-config", "--server-url", "--vllm-args",
                 "--main-process-ip"):
        p.add_argument(name, default=DEFAULT_HOST if name == "--host" else "")
    # Numbers are read as text and judged below: the messages name the option and the value as given.
    for name in ("--port", "--health-timeout", "--kv-cache-bytes", "--server-restarts", "--tensor-parallel-size",
                 "--max-model-len", "--num-processes", "--num-machines", "--machine-rank", "--main-process-port"):
        p.add_argument(name, default=None)
    for name in ("--check", "--no-port-check", "--server-running", "--dry-run"):
        p.add_argument(name, action="store_true")
    return p


def _number(args: argparse.Namespace, name: str, kind: type, low: float | None = None) -> None:
    """Turn option `name`'s text into `kind`, naming the option when it is no number or below `low`."""
    dest = name[2:].replace("-", "_")
    text = getattr(args, dest)
    if text is None:
        return
    try:
        value = kind(text)
    except ValueError:
        raise MathGRPOError(f"{name}: {text!r} is not a number") from None
    if low is not None and not (value >= low and math.isfinite(value)):
        raise MathGRPOError(f"{name}: {text} must be {'positive' if low > 0 else '0 or more'}"
                            f"{' seconds' if name == '--health-timeout' else ''}")
    setattr(args, dest, value)


def parse_options(argv: Sequence[str]) -> argparse.Namespace:
    """Launcher options anywhere; the first other bare word (or --config) is the recipe, the rest overrides."""
    args, rest = _parser().parse_known_args(list(argv))
    if args.help:
        print(__doc__)
        sys.exit(0)
    args.recipe = args.config
    args.overrides = []
    for arg in rest:
        if not args.recipe and not arg.startswith("-"):
            args.recipe = arg
        else:
            args.overrides.append(arg)
    _number(args, "--port", int)
    if args.port is not None and not 1 <= args.port <= 65535:
        raise MathGRPOError(f"--port: {args.port} is not a port (1-65535)")
    _number(args, "--health-timeout", float, low=1e-9)
    _number(args, "--kv-cache-bytes", int, low=1)
    _number(args, "--server-restarts", int, low=0)
    for name in ("--tensor-parallel-size", "--max-model-len", "--num-processes", "--num-machines"):
        _number(args, name, int, low=1)
    _number(args, "--machine-rank", int, low=0)
    _number(args, "--main-process-port", int, low=1)
    args.server_restarts = 3 if args.server_restarts is None else args.server_restarts
    args.vllm_args = shlex.split(args.vllm_args)
    if args.role == "trainer" and not args.server_url:
        raise MathGRPOError("--role trainer trains against a running server: pass --server-url URL")
    if args.role == "server" and args.server_url:
        raise MathGRPOError("--role server starts a server: --server-url is for the trainer role")
    if args.role != "server" and (args.num_machines or 1) > 1 and not args.main_process_ip:
        raise MathGRPOError(f"--num-machines {args.num_machines}: pass --main-process-ip (the first training node) "
                            "and --machine-rank")
    if not args.recipe:
        raise MathGRPOError("usage: python -m math_grpo.launch [options] RECIPE.yaml [overrides] (see --help)")
    if not os.path.isfile(args.recipe):
        raise MathGRPOError(f"{args.recipe}: recipe file not found")
    return args


# -- where things run ---------------------------------------------------------------------------------------------
def gpu_count() -> int:
    """GPUs on this machine, as nvidia-smi lists them (0 without a driver)."""
    if shutil.which("nvidia-smi") is None:
        return 0
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return len(out.stdout.splitlines()) if out.returncode == 0 else 0


def split_gpus(opts: argparse.Namespace, num_gpus: int) -> tuple[str, str]:
    """(server GPUs, trainer GPUs) on this machine: by role, else the server on the last GPU and training on the
    rest when there are several."""
    every = ",".join(str(g) for g in range(num_gpus))
    if opts.role == "trainer":
        return "", opts.trainer_gpus or every
    if opts.role == "server":
        return ("" if opts.server_gpus == "cpu" else opts.server_gpus or every), ""
    server = "" if opts.server_gpus == "cpu" else opts.server_gpus or (str(num_gpus - 1) if num_gpus >= 2 else "")
    trainer = opts.trainer_gpus
    if num_gpus >= 1 and not trainer:
        taken = set(server.split(","))
        trainer = ",".join(str(g) for g in range(num_gpus) if str(g) not in taken)
        if not trainer:
            raise MathGRPOError(f"no GPU left for training (server on {server} of {num_gpus}); pass --trainer-gpus")
    return server, trainer


def default_accelerate_config(num_gpus: int, num_processes: int) -> str:
    name = ("zero2.yaml" if num_gpus > 1 else "single_gpu.yaml" if num_gpus == 1
            else "cpu_ddp.yaml" if num_processes > 1 else "cpu.yaml")
    return os.path.join("accelerate_configs", name)


def accelerate_command() -> list[str]:
    """`accelerate launch`, from this interpreter's environment when it has one."""
    exe = os.path.join(os.path.dirname(sys.executable), "accelerate")
    if os.path.exists(exe):
        return [exe, "launch"]
    if shutil.which("accelerate"):
        return ["accelerate", "launch"]
    return [sys.executable, "-m", "accelerate.commands.launch"]


def accelerate_args(opts: argparse.Namespace, config: str, num_processes: int, trainer_gpus: str) -> list[str]:
    """`accelerate launch`'s options: this machine's processes, or this node's place in a multi-node run."""
    out = ["--config_file", config]
    if (opts.num_machines or 1) > 1:
        return out + ["--num_machines", str(opts.num_machines), "--num_processes", str(num_processes),
                      "--machine_rank", str(opts.machine_rank or 0), "--main_process_ip", opts.main_process_ip,
                      "--main_process_port", str(opts.main_process_port or 29500), "--same_network",
                      "--rdzv_backend", "static"]
    return out + (["--num_processes", str(num_processes)] if trainer_gpus or opts.num_processes else [])


class Interrupted(BaseException):
    """A signal arrived before training started: unwind (stopping a half-started server), exit 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class Launch:
    """One launch: the server (maybe), the training process group (maybe), and the signal handling between them."""

    def __init__(self) -> None:
        self.server: ServerProcess | None = None
        self.train: subprocess.Popen | None = None
        self.signum: int | None = None
        self.supervisor: ServerSupervisor | None = None
        self.serving = False  # the server role: waiting for a signal, nothing to unwind
        self.role = "both"

    def on_signal(self, signum: int, frame: object) -> None:
        if self.signum is None:
            what = "the vLLM server" if self.role == "server" else \
                "training (checkpoint at the end of the step), then the server"
            print(f"[launch] got {signal.Signals(signum).name}: stopping {what}", file=sys.stderr, flush=True)
        self.signum = signum
        if self.supervisor is not None:  # a server being restarted would keep the trainer waiting
            self.supervisor.give_up(f"the launcher is stopping ({signal.Signals(signum).name})")
        if self.train is None and not self.serving:  # still checking or starting the server: stop that now
            raise Interrupted(signum)

    # -- 6. teardown --------------------------------------------------------------------------------------------
    def stop_training(self) -> None:
        """`accelerate launch` does not forward signals: signal its children (the ranks) directly; they save a
        checkpoint at the end of the current step on SIGTERM, then the launcher exits with them."""
        if self.train is None or self.train.poll() is not None:
            return
        signal_members(self.train.pid, signal.SIGTERM)
        if not wait_group(self.train.pid, TRAIN_STOP_TIMEOUT_S):
            print(f"[launch] training did not stop within {TRAIN_STOP_TIMEOUT_S:.0f} s: killing it", file=sys.stderr)
            stop_process_group(self.train.pid, grace_s=0.0)
        self.train.wait()

    def stop_server(self) -> None:
        """Stop the server we started (also one still starting: `ServerProcess.start` may have stopped it)."""
        if self.server is not None:
            pid = f" (pid {self.server.proc.pid})" if self.server.proc is not None else ""
            print(f"[launch] stopping the vLLM server{pid}", file=sys.stderr, flush=True)
            self.server.stop()
            self.server = None

    # -- 2-5. a launch ------------------------------------------------------------------------------------------
    def run(self, opts: argparse.Namespace) -> int:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.role = opts.role
        server_gpus, trainer_gpus = split_gpus(opts, gpu_count())
        num_trainers = len(parse_gpu_ids(trainer_gpus, "--trainer-gpus"))
        num_processes = opts.num_processes or num_trainers or 1
        acc_config = opts.accelerate_config or default_accelerate_config(num_trainers, num_processes)
        if not os.path.isfile(acc_config):
            raise MathGRPOError(f"{acc_config}: accelerate config not found (--accelerate-config)")
        url_override = (["--vllm_server_base_url", opts.server_url] if opts.server_url else
                        ["--vllm_server_base_url", f"http://{opts.host}:{opts.port}"] if opts.port else [])
        # The recipe is parsed once here; each training process parses it once more, as accelerate starts it.
        parsed = parse_recipe_for_launch(opts.recipe, [*opts.overrides, *url_override])
        if opts.role != "both" and not uses_server(parsed[1]):
            raise MathGRPOError(f"{opts.recipe} does not use a vLLM server (use_vllm: true, vllm_mode: server); "
                                f"--role {opts.role} is for server-mode recipes")
        if not opts.dry_run:
            world = validate_launch(
                *parsed, server_gpus=parse_gpu_ids(server_gpus, "--server-gpus"),
                trainer_gpus=parse_gpu_ids(trainer_gpus, "--trainer-gpus"), port=opts.port, host=opts.host,
                accelerate_config=acc_config, num_processes=opts.num_processes or num_trainers or None,
                num_machines=opts.num_machines, max_model_len=opts.max_model_len, role=opts.role,
                check_port=not (opts.server_url or opts.no_port_check or opts.server_running))
            print(check_summary(opts.recipe, world, *parsed), flush=True)
            if opts.check:
                return 0
        plan = plan_launch(*parsed, host=opts.host, port=opts.port, gpus=server_gpus or None,
                           kv_cache_bytes=opts.kv_cache_bytes, tensor_parallel=opts.tensor_parallel_size,
                           max_model_len=opts.max_model_len, extra_args=opts.vllm_args)
        if opts.host not in LOOPBACK and (opts.role == "server" or opts.dry_run and opts.role != "trainer"):
            print(f"[launch] the vLLM server will listen on {opts.host}:{plan.spec.port}, not loopback only: its "
                  "weight-update endpoints are open to whoever reaches that address", file=sys.stderr, flush=True)
        if opts.dry_run:
            return self.dry_run(opts, plan, acc_config, num_processes, trainer_gpus)
        health_timeout = opts.health_timeout or plan.health_timeout
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.on_signal)
        if opts.role == "server":
            return self.serve(opts, plan, server_gpus, health_timeout)
        extra: list[str] = []
        if plan.use_server:
            if opts.server_url:
                VLLMServerClient(opts.server_url).wait_until_healthy(health_timeout)
            else:
                self.start_server(opts, plan, server_gpus, health_timeout)
            extra = ["--vllm_server_base_url", opts.server_url or plan.spec.url]
        os.makedirs(plan.run_dir, exist_ok=True)
        return self.train_until_done(opts, plan, acc_config, num_processes, trainer_gpus, extra)

    def dry_run(self, opts: argparse.Namespace, plan: LaunchPlan, acc_config: str, num_processes: int,
                trainer_gpus: str) -> int:
        if opts.role != "trainer" and plan.use_server and not opts.server_url:
            print(f"[dry-run] server: {shlex.join(plan.spec.command())}", flush=True)
        if opts.role != "server":
            url = ["--vllm_server_base_url", opts.server_url or plan.spec.url] if plan.use_server else []
            command = self.training_command(opts, plan, acc_config, num_processes, trainer_gpus, url)
            print(f"[dry-run] training: {command}", flush=True)
        print(f"[dry-run] run dir {plan.run_dir}", flush=True)
        return 0

    def start_server(self, opts: argparse.Namespace, plan: LaunchPlan, server_gpus: str, health_timeout: float) -> None:
        """Start the server and wait for /health; from then on the supervisor restarts it when it dies."""
        log = os.path.join(plan.run_dir, "server.log")
        where = f"GPUs {server_gpus}" if server_gpus else "CPU build"
        if opts.host not in LOOPBACK and opts.role == "both":
            print(f"[launch] the vLLM server listens on {opts.host}, not loopback only: its weight-update "
                  f"endpoints are open to whoever reaches port {plan.spec.port}", flush=True)
        print(f"[launch] starting the vLLM server ({where}) for {plan.spec.model} at {plan.spec.url}; log: {log}",
              flush=True)
        os.makedirs(plan.run_dir, exist_ok=True)
        self.server = ServerProcess(plan.spec, log)
        if "--headless" in plan.spec.extra_args:  # an engine node: no API server, no /health to wait for
            self.server.spawn()
            return
        self.server.start(health_timeout)
        self.supervisor = ServerSupervisor(self.server, opts.server_restarts, health_timeout,
                                           os.path.join(plan.run_dir, "server_status.json"))

    def serve(self, opts: argparse.Namespace, plan: LaunchPlan, server_gpus: str, health_timeout: float) -> int:
        """The server role: start the server, keep it up (restarts included) until a signal stops the launcher."""
        self.start_server(opts, plan, server_gpus, health_timeout)
        self.serving = True
        while self.signum is None:
            if self.supervisor is not None:
                self.supervisor.poll()
                if self.supervisor.state == "failed":
                    print(f"error: the vLLM server died ({self.supervisor.cause}; {self.supervisor.restarts} "
                          f"restart(s) of at most {opts.server_restarts}); see {self.server.log_path}", file=sys.stderr)
                    return 1
            elif self.server.proc.poll() is not None:
                print(f"error: the vLLM engine exited ({self.server.proc.returncode}); see {self.server.log_path}",
                      file=sys.stderr)
                return 1
            time.sleep(0.2)
        return 128 + self.signum

    def training_command(self, opts: argparse.Namespace, plan: LaunchPlan, acc_config: str, num_processes: int,
                         trainer_gpus: str, extra: list[str]) -> str:
        cmd = ["accelerate", "launch", *accelerate_args(opts, acc_config, num_processes, trainer_gpus),
               "recipes/grpo.py", "--config", opts.recipe, *opts.overrides, "--output_dir", plan.run_dir, *extra]
        return shlex.join(cmd)

    def train_until_done(self, opts: argparse.Namespace, plan: LaunchPlan, acc_config: str, num_processes: int,
                         trainer_gpus: str, extra: list[str]) -> int:
        env = dict(os.environ)
        acc_args = accelerate_args(opts, acc_config, num_processes, trainer_gpus)
        if trainer_gpus:
            env["CUDA_VISIBLE_DEVICES"] = trainer_gpus
        else:
            # CPU training beside a CPU server and reward workers: one math thread per process. With more, OpenMP
            # threads spin against each other on a small machine (seen: a tiny model's forward 5x slower at 2).
            env.setdefault("OMP_NUM_THREADS", "1")
        if self.supervisor is not None:
            env[STATUS_ENV] = self.supervisor.status_path
        cmd = [*accelerate_command(), *acc_args, os.path.join(REPO, "recipes", "grpo.py"), "--config", opts.recipe,
               *opts.overrides, "--output_dir", plan.run_dir, *extra]
        print(f"[launch] training: accelerate launch {' '.join(acc_args)} recipes/grpo.py --config {opts.recipe} "
              f"(run dir {plan.run_dir})", flush=True)
        # Its own process group, so a signal to the launcher reaches every training process exactly once.
        self.train = subprocess.Popen(cmd, env=env, start_new_session=True)
        while self.train.poll() is None:
            if self.signum is not None:
                self.stop_training()
                return 128 + self.signum
            if self.supervisor is not None:
                self.supervisor.poll()
            time.sleep(0.2)
        rc = self.train.returncode
        if rc != 0 and self.server is not None and self.supervisor is not None and (
                self.server.proc is None or not group_alive(self.server.proc.pid) or self.supervisor.state == "failed"):
            print(f"error: the vLLM server died during training ({self.supervisor.cause}; "
                  f"{self.supervisor.restarts} restart(s) of at most {opts.server_restarts}); see "
                  f"{self.server.log_path}", file=sys.stderr)
        return rc


def main(argv: Sequence[str] | None = None) -> None:
    opts = parse_options(sys.argv[1:] if argv is None else argv)
    launch = Launch()
    try:
        rc = launch.run(opts)
    except Interrupted as stop:
        rc = 128 + stop.signum
    finally:
        launch.stop_training()
        launch.stop_server()
    sys.exit(rc)


if __name__ == "__main__":
    run_cli(main)
