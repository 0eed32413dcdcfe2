"""``bfm-eval``: the paper's verification accuracy protocol (10-fold thresholds, matching cases, mask accuracy).

    from bfm_deploy.eval import EvalOptions, run_eval
    run = run_eval(EvalOptions(dataset="lfw", folds="6-10", compare=("Baseline 1=engines/demo:full", "ours=engines/demo")))
    run.to_json()    # what bfm-eval --json-out writes
"""

from .api import EvalOptions, EvalRun, run_eval, run_landmarks

__all__ = ["EvalOptions", "EvalRun", "run_eval", "run_landmarks"]
