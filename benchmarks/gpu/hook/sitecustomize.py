"""Per-step timing for `recipes/grpo.py` however it is launched (launch/grpo.sh, accelerate launch).

Put this folder on PYTHONPATH and set BENCH_TIMING_OUT=FILE.jsonl: the training processes (argv[0] ends in
recipes/grpo.py) then run `bench_timing.install()` before the recipe builds its trainer. Every other Python
process (the vLLM server and its workers, validation, planning) is left alone. Any other sitecustomize on
the path still runs. Nothing here changes what is trained.
"""

import importlib.machinery
import importlib.util
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))


def _chain() -> None:
    spec = importlib.machinery.PathFinder.find_spec(
        "sitecustomize", [p for p in sys.path if os.path.abspath(p or ".") != _here])
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


def _maybe_install() -> None:
    if not os.environ.get("BENCH_TIMING_OUT"):
        return
    if not (sys.argv and sys.argv[0].replace(os.sep, "/").endswith("recipes/grpo.py")):
        return
    sys.path.insert(0, os.path.dirname(_here))
    import bench_timing

    bench_timing.install()


_chain()
_maybe_install()
