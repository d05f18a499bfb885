r"""Probe any checkpoint, trained here or converted (jepa.convert), on any configured data.

  python -m jepa.evaluate --workdir=runs/ijepa
  python -m jepa.evaluate --workdir=runs/ijepa_h14 --probe=attentive --random_baseline \
      --config.data.source=npz --config.data.path=../shared/data/cifar10/train.npz
  python -m jepa.evaluate --workdir=runs/ijepa --evaluators=knn,few_shot,lidar --pictures

The run's config comes from WORKDIR/config.json (written by jepa.main and jepa.convert) with any
`--config.*` overrides on top, or from --config=FILE. The model is rebuilt from it, the latest checkpoint's
state restored (falling back to an older one if the newest is unreadable) and jepa/evaluation/suite.py
runs the evaluators of eval.evaluators (the method's probes, kNN, few-shot probes, RankMe, LiDAR: see
jepa/evaluation/evaluators.py) on the frozen features; --probe runs only the probe it names, --evaluators
replaces the list. --pictures also draws the run's pictures (curves, masks, patch PCA; jepa/pictures.py)
into WORKDIR/pictures from this checkpoint. Data overrides
change only what is probed (images are resized to data.image_size, the size the checkpoint was trained at);
the model fields must stay those of the checkpoint (an override of one, e.g. --config.model.encoder.width, is
refused on one line before anything is built; see check_model_keys).

`--probe=attentive` on a method whose probe features are pooled (I-JEPA, IWM: average-pooled tokens) probes
all tokens of its EMA target encoder instead, the V-JEPA protocol. Results are printed and written to
WORKDIR/evaluation.json (or --output, whose folder is checked before anything is evaluated).
"""
import json
import os
import sys

from absl import flags

from jepa import cli
from jepa import run_config
from jepa.errors import CheckpointError, ConfigError

PROBES = ("linear", "attentive")
# Keys that shape the trained model's parameters: evaluate rebuilds the model of the checkpoint, so they must be
# the run's (data.*, eval.*, mesh.* and the like may change: they say what is probed and how). ac.encoder_workdir
# is not one: the frozen encoder's weights are in the checkpoint, and the override is how a moved encoder is found.
MODEL_KEYS = ("method", "model.", "lejepa.backbone", "lejepa.resnet_width",
              "lejepa.resnet_stage_widths", "lejepa.cifar_stem", "lejepa.proj_",
              "iwm.conditioning", "ac.width", "ac.depth", "ac.heads", "ac.mlp_ratio", "ac.state", "ac.normalize",
              "ac.rope_layout")
# ... except those that change how the model runs, not what it computes at evaluation.
FREE_MODEL_KEYS = ("model.remat", "model.encoder.drop_path", "model.conv", "model.backward_cut")
MISMATCH_FIX = ("do not override model keys of a trained run (evaluate uses the run's config.json: drop the "
                "--config.model.* overrides)")


def restore(config, workdir):
  """(state_def, state, meta): the train state's definition for `config` (jepa/train_state.py) and the
  latest readable checkpoint in `workdir`."""
  # pylint: disable=import-outside-toplevel  (keeps --help fast)
  from jepa import checkpoint as checkpoint_lib
  from jepa import config as config_lib
  from jepa import parallel
  from jepa import train_state
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not os.path.isdir(directory):
    raise CheckpointError(f"--workdir={workdir} has no checkpoints/ folder; train (jepa.main) or convert "
                          "(jepa.convert) into it first")
  config = config_lib.with_defaults(config)
  parallel.maybe_initialize_distributed(config.distributed)
  state_def = train_state.define(config)
  ckpt = checkpoint_lib.Checkpointer(directory)
  try:
    restored = ckpt.restore_latest(state_def.abstract, None, mismatch_fix=MISMATCH_FIX)
  finally:
    ckpt.close()
  if restored is None:
    raise CheckpointError(f"--workdir={workdir} holds no checkpoint; train (jepa.main) or convert "
                          "(jepa.convert) into it first")
  state, meta = restored
  return state_def, state, meta


def _tokens_of_target(model, target, images):
  """All tokens [B, N, D] of the frozen EMA target encoder (the attentive-probe protocol)."""
  del model
  return target(images)


def evaluate(config, workdir, *, probe="", random_baseline=False, evaluators=None, pictures=False):
  """Evaluates the latest checkpoint in `workdir`; returns {'step': int, 'probes': {result: {name: value}}}.

  Args:
    config: the run's config (e.g. `run_config.load(workdir)`), data fields free to change.
    workdir: the run's directory (checkpoints/ inside).
    probe: '' (the method's probes), 'linear' or 'attentive'.
    random_baseline: also probe a randomly initialised model, side by side.
    evaluators: a comma-separated list for eval.evaluators; None keeps the config's, or only the probe when
      `probe` is given.
    pictures: also write the pictures into WORKDIR/pictures (then under 'pictures' in the result).
  """
  if probe and probe not in PROBES:
    raise ConfigError(f"--probe={probe!r} is unknown; use one of {list(PROBES)}")
  # pylint: disable=import-outside-toplevel
  from jepa import config as config_lib
  from jepa.data import sources
  from jepa.evaluation import evaluators as evaluators_lib
  from jepa.evaluation import suite
  config = config_lib.with_defaults(config)
  if evaluators is None and probe:
    evaluators = "probes"
  if evaluators is not None:
    config.eval.evaluators = evaluators
  state_def, state, _ = restore(config, workdir)
  method = state_def.method
  feature_fn, probes = method.features, method.probes
  if probe:
    if probe == "attentive" and "attentive" not in method.probes and method.ema_target:
      feature_fn = _tokens_of_target  # The method pools its probe features; the attentive probe needs tokens.
    probes = (probe,)
  states = {"trained": state}
  if random_baseline:
    states["random_init"] = state_def.init(config.seed + 1)
  results = suite.evaluate(config, state_def, states, sources.get_source(config.data, "train"),
                           sources.get_source(config.data, "eval"),
                           names=evaluators_lib.resolve(config.eval.evaluators, probes), feature_fn=feature_fn)
  out = {"step": int(state["step"]), "probes": results}
  if pictures:
    from jepa import pictures as pictures_lib  # pylint: disable=import-outside-toplevel
    out["pictures"] = pictures_lib.write_pictures(config, state_def, workdir, state)
  return out


# --- command line -------------------------------------------------------------------------------------------
def _define_flags():
  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags
  flags.DEFINE_string("workdir", None, "The run's directory: checkpoints/ and config.json.")
  config_flags.DEFINE_config_file("config", None, "Config file (default: the run's config.json, through "
                                  "jepa/run_config.py); --config.* overrides apply to it.", lock_config=True)
  flags.DEFINE_enum("probe", "", ["", *PROBES], "Probe to run; '' = the method's own.")
  flags.DEFINE_bool("random_baseline", False, "Also probe a randomly initialised model of the same config.")
  flags.DEFINE_string("evaluators", None, "Comma-separated evaluators (probes, linear, attentive, knn, "
                      "few_shot, rankme, lidar); default: the config's eval.evaluators, or the --probe.")
  flags.DEFINE_bool("pictures", False,
                    "Also write the pictures (curves, masks, patch PCA) into WORKDIR/pictures.")
  flags.DEFINE_string("output", "", "JSON file for the results; '' = WORKDIR/evaluation.json.")
  flags.mark_flags_as_required(["workdir"])


def with_default_config(argv):
  """argv with `--config=<jepa/run_config.py>:WORKDIR` added when it names a workdir but no --config."""
  workdir = cli.flag_value(argv, "workdir")
  if workdir is None or cli.flag_value(argv, "config") is not None:
    return argv
  if not os.path.exists(os.path.join(workdir, run_config.CONFIG_FILE)):
    return argv  # main() reports the missing file on one line.
  return [argv[0], f"--config={run_config.__file__}:{workdir}", *argv[1:]]


def check_model_keys(config, workdir):
  """Raises a one-line ConfigError when `config` describes another model than the run's config.json (a
  --config.model.* override, or a --config file of another model): before anything is built or compiled."""
  if not os.path.exists(os.path.join(workdir, run_config.CONFIG_FILE)):
    return  # A run without config.json (an older layout): the checkpoint's shapes are the check.
  # pylint: disable=import-outside-toplevel
  from jepa import config as config_lib
  saved = run_config.flat_json(config_lib.with_defaults(run_config.load(workdir)))
  wanted = run_config.flat_json(config_lib.with_defaults(config))
  changed = [k for k in sorted(set(saved) | set(wanted))
             if any(k == m or (m.endswith((".", "_")) and k.startswith(m)) for m in MODEL_KEYS)
             and k not in FREE_MODEL_KEYS and saved.get(k) != wanted.get(k)]
  if changed:
    shown = ", ".join(f"{k}={wanted.get(k)!r} (the run has {saved.get(k)!r})" for k in changed[:4])
    more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
    raise ConfigError(f"{shown}{more}: --workdir={workdir} holds a model trained with other values; do not "
                      "override model keys of a trained run (evaluate rebuilds the run's model from its "
                      "config.json: drop those overrides, or pass the run's own --config)")


def main(argv):
  cli.start(argv)
  f = flags.FLAGS
  with cli.boundary(f.workdir, interrupted_message="interrupted; nothing written (the run is unchanged)"):
    config = cli.loaded_config(f.config)
    path = f.output or os.path.join(f.workdir, "evaluation.json")
    if f.output or os.path.isdir(f.workdir):
      cli.check_output_file(path, "--output" if f.output else "--workdir (evaluation.json)")
    if config is None:
      config = run_config.load(f.workdir)
    check_model_keys(config, f.workdir)
    out = evaluate(config, f.workdir, probe=f.probe, random_baseline=f.random_baseline,
                   evaluators=f.evaluators, pictures=f.pictures)
    for kind, values in out["probes"].items():
      line = " | ".join(f"{name} {v:.4f}" for name, v in values.items())
      what = f"{kind} probe accuracy (held-out split)" if kind in PROBES else kind
      print(f"{what} at step {out['step']}: {line}", flush=True)
    for name, rel in out.get("pictures", {}).items():
      print(f"wrote {os.path.join(f.workdir, rel)}", flush=True)
    with open(path, "w", encoding="utf-8") as fh:
      json.dump(out, fh, indent=2)
    print(f"wrote {path}", flush=True)


def entry():
  _define_flags()
  cli.run(main, argv=with_default_config(sys.argv),
          interrupted_message="interrupted; nothing written (the run is unchanged)")


if __name__ == "__main__":
  entry()
