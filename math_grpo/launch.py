"""The GRPO launcher: start the vLLM server a recipe asks for, train with `accelerate launch recipes/grpo.py`,
and always stop the server (exit, error, Ctrl-C, SIGTERM).

    python -m math_grpo.launch [launcher options] RECIPE.yaml [recipe overrides, e.g. --max_steps 10]

Launcher options use dashes; recipe fields use underscores:
  --server-gpus IDS        GPU ids for the vLLM server, e.g. "1" (default: the last GPU when there are >= 2;
                           "cpu" or no GPU: the CPU build of vLLM)
  --trainer-gpus IDS       GPU ids for training (default: the GPUs the server does not use)
  --port PORT              server port (default: the recipe's vllm_server_port, else 8000)
  --host HOST              server address (default 127.0.0.1: loopback only)
  --accelerate-config F    accelerate config (default: cpu.yaml without GPUs, single_gpu.yaml for one
                           training GPU, zero2.yaml for several; all in accelerate_configs/)
  --health-timeout S       seconds to wait for the server's /health (default: max(recipe's
                           vllm_server_timeout, 60); a CPU start takes about 90 s)
  --server-url URL         use a server that is already running (nothing is started or stopped)
  --server-restarts N      restart the server this launcher started when it dies, at most N times (default 3;
                           0: a dead server ends the run); the trainer waits, re-pushes the weights, goes on
  --kv-cache-bytes N       CPU build: KV cache size (default 512 MiB)
  --check                  only check the recipe and this launch (exit 0, or 2 with a one-line error)
The server log goes to RUN_DIR/server.log (RUN_DIR: the recipe's output_dir, else output_root/run_name).
`bash launch/grpo.sh` is this launcher.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from math_grpo.cli import run_cli
from math_grpo.errors import MathGRPOError
from math_grpo.launch_checks import parse_gpu_ids, validate_launch
from math_grpo.launch_plan import check_summary, parse_recipe_for_launch, plan_launch
from math_grpo.processes import group_alive, signal_members, stop_process_group, wait_group
from math_grpo.server_recovery import STATUS_ENV
from math_grpo.server_supervisor import ServerSupervisor
from math_grpo.vllm_server import DEFAULT_HOST, ServerProcess, VLLMServerClient

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIONS = ("--server-gpus", "--trainer-gpus", "--port", "--host", "--accelerate-config", "--health-timeout",
           "--server-url", "--kv-cache-bytes", "--server-restarts")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
TRAIN_STOP_TIMEOUT_S = float(os.environ.get("TRAIN_STOP_TIMEOUT", 300))  # a checkpoint at the end of the step


@dataclass
class Options:
    recipe: str = ""
    overrides: list[str] = field(default_factory=list)
    server_gpus: str = ""
    trainer_gpus: str = ""
    port: int | None = None
    host: str = DEFAULT_HOST
    accelerate_config: str = ""
    health_timeout: float | None = None
    server_url: str = ""
    kv_cache_bytes: int | None = None
    server_restarts: int = 3
    check: bool = False


def parse_options(argv: Sequence[str]) -> Options:
    """Launcher options anywhere; the first other bare word is the recipe, everything else an override."""
    opts, args, i = Options(), list(argv), 0
    while i < len(args):
        arg = args[i]
        if arg in ("-h", "--help"):
            print(__doc__)
            sys.exit(0)
        if arg == "--check":
            opts.check = True
        elif arg in OPTIONS:
            if i + 1 >= len(args):
                raise MathGRPOError(f"{arg} needs a value (see --help)")
            value, name = args[i + 1], arg[2:].replace("-", "_")
            try:
                setattr(opts, name, value if name in ("server_gpus", "trainer_gpus", "host", "accelerate_config",
                                                      "server_url") else float(value) if name == "health_timeout"
                        else int(value))
            except ValueError:
                raise MathGRPOError(f"{arg}: {value!r} is not a number") from None
            i += 1
        elif not opts.recipe and not arg.startswith("--"):
            opts.recipe = arg
        else:
            opts.overrides.append(arg)
        i += 1
    if opts.port is not None and not 1 <= opts.port <= 65535:
        raise MathGRPOError(f"--port: {opts.port} is not a port (1-65535)")
    if opts.health_timeout is not None and not opts.health_timeout > 0:
        raise MathGRPOError(f"--health-timeout: {opts.health_timeout:g} must be a positive number of seconds")
    if opts.server_restarts < 0:
        raise MathGRPOError(f"--server-restarts: {opts.server_restarts} must be 0 or more")
    if opts.kv_cache_bytes is not None and opts.kv_cache_bytes <= 0:
        raise MathGRPOError(f"--kv-cache-bytes: {opts.kv_cache_bytes} must be positive")
    if not opts.recipe:
        raise MathGRPOError("usage: python -m math_grpo.launch [options] RECIPE.yaml [overrides] (see --help)")
    if not os.path.isfile(opts.recipe):
        raise MathGRPOError(f"{opts.recipe}: recipe file not found")
    return opts


def gpu_count() -> int:
    """GPUs on this machine, as nvidia-smi lists them (0 without a driver)."""
    if shutil.which("nvidia-smi") is None:
        return 0
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return len(out.stdout.splitlines()) if out.returncode == 0 else 0


def split_gpus(opts: Options, num_gpus: int) -> tuple[str, str]:
    """(server GPUs, trainer GPUs): the server on the last GPU when there are several, training on the rest."""
    server = "" if opts.server_gpus == "cpu" else opts.server_gpus or (str(num_gpus - 1) if num_gpus >= 2 else "")
    trainer = opts.trainer_gpus
    if num_gpus >= 1 and not trainer:
        taken = set(server.split(","))
        trainer = ",".join(str(g) for g in range(num_gpus) if str(g) not in taken)
        if not trainer:
            raise MathGRPOError(f"no GPU left for training (server on {server} of {num_gpus}); pass --trainer-gpus")
    return server, trainer


def default_accelerate_config(num_trainers: int) -> str:
    name = "zero2.yaml" if num_trainers > 1 else "single_gpu.yaml" if num_trainers == 1 else "cpu.yaml"
    return os.path.join("accelerate_configs", name)


def accelerate_command() -> list[str]:
    """`accelerate launch`, from this interpreter's environment when it has one."""
    exe = os.path.join(os.path.dirname(sys.executable), "accelerate")
    if os.path.exists(exe):
        return [exe, "launch"]
    if shutil.which("accelerate"):
        return ["accelerate", "launch"]
    return [sys.executable, "-m", "accelerate.commands.launch"]


class Interrupted(BaseException):
    """A signal arrived before training started: unwind (stopping a half-started server), exit 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class Launch:
    """One launch: the server (maybe), the training process group, and the signal handling between them."""

    def __init__(self) -> None:
        self.server: ServerProcess | None = None
        self.train: subprocess.Popen | None = None
        self.signum: int | None = None
        self.supervisor: ServerSupervisor | None = None

    def on_signal(self, signum: int, frame: object) -> None:
        if self.signum is None:
            print(f"[launch] got {signal.Signals(signum).name}: stopping training (checkpoint at the end of the step), "
                  "then the server", file=sys.stderr, flush=True)
        self.signum = signum
        if self.supervisor is not None:  # a server being restarted would keep the trainer waiting
            self.supervisor.give_up(f"the launcher is stopping ({signal.Signals(signum).name})")
        if self.train is None:  # still checking or starting the server: stop that now
            raise Interrupted(signum)

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

    def run(self, opts: Options) -> int:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        server_gpus, trainer_gpus = split_gpus(opts, gpu_count())
        num_trainers = len(parse_gpu_ids(trainer_gpus, "--trainer-gpus"))
        acc_config = opts.accelerate_config or default_accelerate_config(num_trainers)
        if not os.path.isfile(acc_config):
            raise MathGRPOError(f"{acc_config}: accelerate config not found (--accelerate-config)")
        url_override = (["--vllm_server_base_url", opts.server_url] if opts.server_url else
                        ["--vllm_server_base_url", f"http://{opts.host}:{opts.port}"] if opts.port else [])
        # The recipe is parsed once here; each training process parses it once more, as accelerate starts it.
        parsed = parse_recipe_for_launch(opts.recipe, [*opts.overrides, *url_override])
        world = validate_launch(
            *parsed, server_gpus=parse_gpu_ids(server_gpus, "--server-gpus"),
            trainer_gpus=parse_gpu_ids(trainer_gpus, "--trainer-gpus"), port=opts.port, host=opts.host,
            accelerate_config=acc_config, num_processes=num_trainers or None, check_port=not opts.server_url)
        print(check_summary(opts.recipe, world, *parsed), flush=True)
        if opts.check:
            return 0
        plan = plan_launch(*parsed, host=opts.host, port=opts.port, gpus=server_gpus or None,
                           kv_cache_bytes=opts.kv_cache_bytes)
        os.makedirs(plan.run_dir, exist_ok=True)
        health_timeout = opts.health_timeout or plan.health_timeout

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.on_signal)
        extra: list[str] = []
        if plan.use_server:
            url = opts.server_url or plan.spec.url
            if opts.server_url:
                VLLMServerClient(url).wait_until_healthy(health_timeout)
            else:
                log = os.path.join(plan.run_dir, "server.log")
                where = f"GPUs {server_gpus}" if server_gpus else "CPU build"
                if opts.host not in LOOPBACK:
                    print(f"[launch] the vLLM server listens on {opts.host}, not loopback only: its weight-update "
                          f"endpoints are open to whoever reaches port {plan.spec.port}", flush=True)
                print(f"[launch] starting the vLLM server ({where}) for {plan.spec.model} at {url}; log: {log}",
                      flush=True)
                self.server = ServerProcess(plan.spec, log)
                self.server.start(health_timeout)
                self.supervisor = ServerSupervisor(self.server, opts.server_restarts, health_timeout,
                                                   os.path.join(plan.run_dir, "server_status.json"))
            extra = ["--vllm_server_base_url", url]

        env = dict(os.environ)
        acc_args = ["--config_file", acc_config]
        if trainer_gpus:
            env["CUDA_VISIBLE_DEVICES"] = trainer_gpus
            acc_args += ["--num_processes", str(num_trainers)]
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
        if rc != 0 and self.server is not None and (self.server.proc is None or not group_alive(self.server.proc.pid)
                                                    or self.supervisor.state == "failed"):
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
