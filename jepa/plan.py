r"""Plan with a trained world model: CEM / MPPI in its latent space on held-out Two Rooms episodes.

  python -m jepa.plan --workdir=runs/wm
  python -m jepa.plan --workdir=runs/wm --episodes=50 --planner=cem --seed=1
  python -m jepa.plan --workdir=runs/wm --config.planner.level=easy --config.planner.max_steps=100

The run's config comes from WORKDIR/config.json (with any `--config.*` overrides on top, e.g. of the planner
section) or from --config=FILE; the model is rebuilt from it and the latest checkpoint restored as
jepa.evaluate does (falling back to an older one if the newest is unreadable). Each episode starts and ends in
opposite rooms (episode i is a function of (seed, i), so the same seed gives the same episodes whatever their
number); the planner encodes the current and the goal observation, rolls candidate action sequences out with
the model's predictor (the GRU of configs/world_model.py, or V-JEPA 2-AC's transformer with its L1 energy, the
vjepa2_ac preset), executes planner.replan_every actions and re-plans (jepa/methods/world_model.py,
jepa/planning.py).

Output: one line per episode, then the run's success rate (within 4.5 px of the goal after planner.max_steps
steps, EB-JEPA's criterion), mean steps to the goal and planning seconds per episode (the episodes run as one
vmapped batch; its execution time, compilation excluded, over the number of episodes). The last line is

  success=<fraction> steps_to_goal=<mean> seconds_per_episode=<s> episodes=<n> planner=<kind> seed=<s>

and the numbers are written to WORKDIR/plan.json (or --output), with a few of the episodes drawn on their maps
(start, goal, executed path, the last plan's intended path; jepa/methods/world_model.py `write_episodes`) in
WORKDIR/plan_episodes.png (the output's name + _episodes.png). Bad input (elites > samples, horizon 0, an
action bound <= 0, a world-model config on an image dataset, a workdir whose model is not a world model) ends
the command with one line naming the key and the fix, exit status 2, before anything is restored.
"""
import json
import os
import sys

from absl import flags

from jepa import cli
from jepa import evaluate as evaluate_lib
from jepa import run_config
from jepa.errors import ConfigError

PLANNERS = ("mppi", "cem")
INTERRUPTED = "interrupted; the run is unchanged (plan.json is written when planning ends)"


def check(config, workdir, *, episodes=None, planner="", seed=None):
  """The config jepa.plan plans with (planner overrides applied), or a one-line ConfigError.

  Checks, before anything is built: the run is a world model, its data are trajectories, and the planner
  section is valid (planning.validate, reported as planner.<key>).
  """
  # pylint: disable=import-outside-toplevel  (keeps --help fast)
  from jepa import config as config_lib
  from jepa import methods
  from jepa.methods import world_model
  config = config_lib.with_defaults(config)
  method = methods.get_method(config)  # Builds nothing; reads no workdir.
  if not isinstance(method, world_model.PlanningMethod):
    raise ConfigError(f"--workdir={workdir} holds a {config.method!r} model, not a world model: jepa.plan needs an "
                      "action-conditioned world model; train one with python -m jepa.main "
                      "--config=configs/world_model.py --workdir=DIR")
  world_model.check_data(config)
  if episodes is not None:
    if episodes < 1:
      raise ConfigError(f"--episodes={episodes} must be >= 1")
    config.planner.episodes = episodes
  if planner:
    config.planner.kind = planner
  if seed is not None:
    config.planner.seed = seed
  world_model.check_planner(config)
  method.check_can_plan()
  if config.planner.episodes < 1:
    raise ConfigError(f"planner.episodes={config.planner.episodes}: pass --episodes=N (N >= 1) to plan")
  return config


def plan(config, workdir, *, episodes=None, planner="", seed=None, picture=""):
  """Plans with the latest checkpoint in `workdir`; returns the summary dict (see the module docstring).

  `picture`: a PNG path for a few of the planned episodes drawn on their maps (world_model.write_episodes).
  """
  config = check(config, workdir, episodes=episodes, planner=planner, seed=seed)
  from jepa.methods import world_model  # pylint: disable=import-outside-toplevel
  state_def, state, _ = evaluate_lib.restore(config, workdir)
  model, _ = state_def.models(state)
  p = config.planner
  out = state_def.method.plan(model)  # The method's energy (world_model: squared error; vjepa2_ac: ac.energy).
  summary = world_model.summarize(out, p.max_steps)
  if picture:
    world_model.write_episodes(out, p, picture)
  reached = out["steps_to_goal"] >= 0
  return {
      "step": int(state["step"]), "planner": out["kind"], "seed": out["seed"], "episodes": out["episodes"],
      "max_steps": int(p.max_steps), "level": p.level, "success": summary["plan_success"],
      "reached": float(reached.mean()),
      "steps_to_goal": float(out["steps_to_goal"][reached].mean()) if reached.any() else None,
      "steps_to_goal_censored": summary["plan_steps"], "final_distance": summary["plan_final_distance"],
      "seconds_per_episode": out["seconds_per_episode"], "compile_seconds": out["compile_seconds"],
      "per_episode": [{"success": bool(s), "steps_to_goal": int(t), "final_distance": float(d)}
                      for s, t, d in zip(out["success"], out["steps_to_goal"], out["final_distance"])],
      "planner_config": {k: p[k] for k in sorted(p.keys())},
  }


def lines(out, workdir):
  """The printed report of `plan`'s result, one string per line; the last holds success= and seconds_per_episode=."""
  p = out["planner_config"]
  text = [f"{workdir}: world model at step {out['step']}, {out['planner']} planner (horizon {p['horizon']}, "
          f"{p['num_samples']} samples, {p['num_iterations']} iterations, {p['num_elites']} elites, re-planning "
          f"every {p['replan_every']} steps), {out['episodes']} episodes of {out['max_steps']} steps, level "
          f"{out['level']}, seed {out['seed']}"]
  for i, e in enumerate(out["per_episode"]):
    at = f"first within 4.5 px at step {e['steps_to_goal']}" if e["steps_to_goal"] >= 0 else "never within 4.5 px"
    text.append(f"episode {i}: {'success' if e['success'] else 'failure'}, {at}, final distance "
                f"{e['final_distance']:.1f} px")
  n = out["episodes"]
  steps = (f"{out['steps_to_goal']:.1f} (over the {round(out['reached'] * n)} episodes that got there)"
           if out["steps_to_goal"] is not None else "- (no episode got there)")
  text.append(f"success {out['success']:.3f} ({round(out['success'] * n)} of {n} episodes within 4.5 px of the goal "
              f"at the end); mean steps to the goal {steps}; planning {out['seconds_per_episode']:.3f} s per episode "
              f"(one batch of {n}, compilation {out['compile_seconds']:.1f} s more)")
  steps_value = f"{out['steps_to_goal']:.1f}" if out["steps_to_goal"] is not None else "nan"
  text.append(f"success={out['success']:.4f} steps_to_goal={steps_value} "
              f"seconds_per_episode={out['seconds_per_episode']:.4f} episodes={n} planner={out['planner']} "
              f"seed={out['seed']}")
  return text


# --- command line -------------------------------------------------------------------------------------------
def _define_flags():
  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags
  flags.DEFINE_string("workdir", None, "The world model run's directory: checkpoints/ and config.json.")
  config_flags.DEFINE_config_file("config", None, "Config file (default: the run's config.json, through "
                                  "jepa/run_config.py); --config.* overrides apply to it.", lock_config=True)
  flags.DEFINE_integer("episodes", None, "Held-out episodes (default: the config's planner.episodes).")
  flags.DEFINE_enum("planner", "", ["", *PLANNERS], "Planner; '' = the config's planner.kind.")
  flags.DEFINE_integer("seed", None, "Which episodes (default: the config's planner.seed).")
  flags.DEFINE_string("output", "", "JSON file for the results; '' = WORKDIR/plan.json.")
  flags.mark_flags_as_required(["workdir"])


def main(argv):
  cli.start(argv)
  f = flags.FLAGS
  with cli.boundary(f.workdir, interrupted_message=INTERRUPTED):
    config = cli.loaded_config(f.config)
    path = f.output or os.path.join(f.workdir, "plan.json")
    if f.output or os.path.isdir(f.workdir):
      cli.check_output_file(path, "--output" if f.output else "--workdir (plan.json)")
    if config is None:
      config = run_config.load(f.workdir)
    check(config, f.workdir, episodes=f.episodes, planner=f.planner, seed=f.seed)  # Before anything is restored.
    picture = os.path.splitext(path)[0] + "_episodes.png"  # Beside the JSON it draws.
    out = plan(config, f.workdir, episodes=f.episodes, planner=f.planner, seed=f.seed, picture=picture)
    with open(path, "w", encoding="utf-8") as fh:
      json.dump(out, fh, indent=2)
    text = lines(out, f.workdir)
    for line in text[:-1]:
      print(line, flush=True)
    print(f"wrote {path} and {picture}", flush=True)
    print(text[-1], flush=True)


def entry():
  _define_flags()
  cli.run(main, argv=evaluate_lib.with_default_config(sys.argv),
          interrupted_message=INTERRUPTED)


if __name__ == "__main__":
  entry()
