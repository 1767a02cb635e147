"""Checkpoints that are never half-taken: completion markers, resume discovery, run-dir metadata.

transformers writes `checkpoint-N/` file by file; a run killed (or out of disk) mid-save leaves a directory
that `get_last_checkpoint` would happily resume from. We mark a checkpoint complete only after the
Trainer's `on_save` (everything written, fsynced), and resume only from marked ones.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import time
from typing import Any

import yaml
from transformers import TrainerCallback

from math_grpo.errors import MathGRPOError

COMPLETE_MARKER = "checkpoint_complete.json"
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
_SECRET_RE = re.compile(r"(token|secret|password|api_key|apikey|credential)", re.IGNORECASE)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str, text: str) -> None:
    """Write via a temp file + rename so readers never see a partial file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def checkpoint_step(path: str) -> int | None:
    m = _CKPT_RE.match(os.path.basename(os.path.normpath(path)))
    return int(m.group(1)) if m else None


def is_complete(ckpt: str) -> bool:
    """A checkpoint is complete when our marker and the Trainer's state file are both there."""
    return os.path.isfile(os.path.join(ckpt, COMPLETE_MARKER)) and os.path.isfile(
        os.path.join(ckpt, "trainer_state.json")
    )


def mark_complete(ckpt: str, step: int) -> None:
    for name in os.listdir(ckpt):  # flush everything the Trainer wrote before declaring victory
        p = os.path.join(ckpt, name)
        if os.path.isfile(p):
            try:
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
            except OSError:
                pass
    atomic_write_text(os.path.join(ckpt, COMPLETE_MARKER), json.dumps({"step": step, "time": time.time()}))


def _dir_size(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def is_disk_full(exc: BaseException, run_dir: str) -> bool:
    """True if `exc` comes from a full disk.

    torch and safetensors wrap ENOSPC in their own errors ("unexpected pos", "file write failed"), so besides
    errno 28 and the usual texts, a failure inside a save counts as disk-full when the disk can no longer hold
    another checkpoint of the size of the last complete one.
    """
    if isinstance(exc, OSError) and exc.errno == 28:
        return True
    text = str(exc)
    if any(s in text for s in ("No space left", "StorageFull", "os error 28", "Disk quota exceeded")):
        return True
    tb, in_save = exc.__traceback__, False
    while tb is not None:
        if "save" in tb.tb_frame.f_code.co_name:
            in_save = True
            break
        tb = tb.tb_next
    if not in_save:
        return False
    try:
        import shutil

        free = shutil.disk_usage(run_dir).free
    except OSError:
        return False
    complete = [c for c in list_checkpoints(run_dir) if is_complete(c)]
    needed = _dir_size(complete[-1]) if complete else 1 << 20
    return free < needed


def list_checkpoints(run_dir: str) -> list[str]:
    if not os.path.isdir(run_dir):
        return []
    found = [(checkpoint_step(n), os.path.join(run_dir, n)) for n in os.listdir(run_dir)]
    return [p for s, p in sorted((s, p) for s, p in found if s is not None) if os.path.isdir(p)]


def last_complete_checkpoint(run_dir: str, quarantine: bool = True) -> str | None:
    """Newest complete checkpoint; incomplete newer ones are reported and (optionally) moved aside.

    Moving them aside matters: the Trainer's own rotation and `get_last_checkpoint` would otherwise treat a
    half-written `checkpoint-N` as the latest.
    """
    for ckpt in reversed(list_checkpoints(run_dir)):
        if is_complete(ckpt):
            return ckpt
        print(f"[checkpoint] skipping incomplete checkpoint {ckpt} (no {COMPLETE_MARKER}: a save was cut short)")
        if quarantine:
            aside = f"{ckpt}.incomplete-{int(time.time())}"
            os.rename(ckpt, aside)
            print(f"[checkpoint] moved it to {aside}")
    return None


def resolve_resume(resume: str | bool | None, run_dir: str) -> str | None:
    """Map --resume_from_checkpoint (None, 'auto'/'true'/'last', or a path) to a complete checkpoint."""
    if resume in (None, False, "", "false", "False", "no", "none", "None"):
        return None
    if resume in (True, "auto", "true", "True", "last", "latest"):
        ckpt = last_complete_checkpoint(run_dir)
        if ckpt is None:
            print(f"[checkpoint] no complete checkpoint in {run_dir}: starting from scratch")
        else:
            print(f"[checkpoint] resuming from {ckpt}")
        return ckpt
    path = str(resume)
    if not os.path.isdir(path):
        raise MathGRPOError(f"resume_from_checkpoint: {path} does not exist")
    if not is_complete(path):
        raise MathGRPOError(f"resume_from_checkpoint: {path} is incomplete (no {COMPLETE_MARKER}); "
                            "use 'auto' to take the last complete one")
    return path


def broadcast_from_main(value: Any, state: Any) -> Any:
    """The main process's `value` on every rank (`state`: a PartialState or Accelerator; None = one process)."""
    if state is None or state.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


def resolve_resume_on_all_ranks(resume: str | bool | None, run_dir: str, state: Any) -> str | None:
    """`resolve_resume` on the main process only (it may move incomplete checkpoints aside), then the same
    answer on every rank: two ranks renaming one folder would race, and ranks must resume from one step."""
    return broadcast_from_main(resolve_resume(resume, run_dir) if state.is_main_process else None, state)


class CompleteCheckpointCallback(TrainerCallback):
    """Marks `checkpoint-N` complete once the Trainer has finished writing it (main process only)."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            ckpt = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            if os.path.isdir(ckpt):
                mark_complete(ckpt, state.global_step)
        return control


class ThisRunsIntervals(TrainerCallback):
    """On resume, this run's logging, eval and save steps apply, not the checkpoint's.

    transformers restores the whole TrainerState from the checkpoint, these intervals included, and only warns
    that they differ from the arguments: a resume with `--save_steps 1000` went on saving every 2 steps, and
    with `save_total_limit` those saves rotated away the checkpoint it had resumed from."""

    def on_train_begin(self, args, state, control, **kwargs):
        state.compute_steps(args, state.max_steps)
        return control


def scrub_secrets(obj: Any) -> Any:
    """Drop values of secret-looking keys so saved configs and logs never hold a token."""
    if isinstance(obj, dict):
        return {k: ("<redacted>" if _SECRET_RE.search(str(k)) and v else scrub_secrets(v)) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [scrub_secrets(v) for v in obj]
    return obj


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        obj = obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {str(k): _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    return str(obj)


def git_commit() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if commit.returncode != 0:
        return "unknown"
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def write_run_metadata(run_dir: str, **sections: Any) -> None:
    """Save the resolved config (secrets removed) and the git commit in the run dir."""
    os.makedirs(run_dir, exist_ok=True)
    resolved = scrub_secrets({name: _to_plain(cfg) for name, cfg in sections.items()})
    atomic_write_text(os.path.join(run_dir, "config.yaml"), yaml.safe_dump(resolved, sort_keys=True))
    atomic_write_text(os.path.join(run_dir, "git_commit.txt"), git_commit() + "\n")
