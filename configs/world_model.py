r"""EB-JEPA's action-conditioned world model on Two Rooms (jepa/methods/world_model.py), and latent planning.

  python -m jepa.main --config=configs/world_model.py --workdir=runs/wm          # CPU-sized, minutes
  python -m jepa.main --config=configs/world_model.py:gpu --workdir=runs/wm_gpu  # EB-JEPA's published sizes
  python -m jepa.plan --workdir=runs/wm --episodes=50 --planner=mppi             # plan with a trained model

The method declares its two sections (jepa/methods/world_model.py `config_sections`; jepa/config.py checks
their keys and types, Method.validate their ranges):

world_model: the model and its loss
  latent_dim      D, the latent (= GRU hidden) size (EB-JEPA: 512)
  channels        IMPALA stage widths (16, 32, 32); each stage: conv 3x3, max-pool 3x3 / 2, residual blocks
  blocks          residual blocks per stage (2)
  idm_hidden      inverse-dynamics MLP width (256)
  rollout_steps   K, autoregressive rollout steps from frame 0 in the loss (8)
  frames          frames of each 17-frame window the loss sees (17; >= rollout_steps + 1)
  regularizer     'vc' (variance hinge + covariance, EB-JEPA's) | 'sigreg' (SIGReg in their place)
  std_weight 16, cov_weight 8, temporal_weight 12, idm_weight 1 (VC_IDM_Sim_Regularizer, train.yaml); at the CPU
                  default's budget cov_weight=0 plans better (44 against 28% at 1,500 steps; README, "World models
                  and planning")
  sigreg_weight, sigreg_slices   SIGReg's weight and random directions (regularizer='sigreg' only)

planner: the planning evaluator (run after training and at eval.every) and jepa.plan
  kind            'mppi' | 'cem'; horizon, num_samples, num_iterations, num_elites as in jepa/planning.py
  init_std        initial sampling std; 0 = the kind's EB-JEPA value (CEM 1.5, MPPI 2)
  temperature     MPPI inverse temperature (0.005); action_bound: each action's norm clip (2.45)
  momentum, cost ('sum' | 'last'), mppi_output ('sample' | 'mean'), warm_start: see jepa/planning.py
  noise_beta      the samples' noise: 0 white (EB-JEPA, V-JEPA 2-AC), beta > 0 coloured along the horizon with a
                  1/f^beta spectrum (iCEM; 2 keeps a heading for tens of steps: experiments/results/world_model/
                  planner_oracle.md)
  episodes        held-out episodes per evaluation (0 = no planning evaluation); seed: which episodes
  max_steps       environment steps per episode (EB-JEPA: 200); replan_every: actions executed per plan
  level           'normal' (start and goal anywhere in opposite rooms, EB-JEPA's task) | 'easy' (near the door)
  episodes_from   'random' (fresh episodes from seed) | 'reference' (EB-JEPA's own 20 evaluation episodes,
                  replayed from its default_rng(0) stream; more than 20 continue that stream; seed is then
                  unused for the episodes; two_rooms.reference_episodes)

The data source (data.source='two_rooms', jepa/data/sources.py) is EB-JEPA's trajectory generator
(jepa/data/trajectories.py): 100,000 fixed random 17-frame windows (seed 0, as the reference's epoch of
100,000), of which the usual carve-out (data.eval_fraction, 10%) is held out. The trajectories carry no
labels, so the method runs no linear probe (probes = ()); eval.evaluators may list only 'rankme'.

Presets (the text after ':'):
  ''     CPU-sized: latent 64, IMPALA 16/32/32 with 2 blocks (the reference encoder), the first 9 frames of each
         window (1 + 8 rollout steps; the reference's regularisers see all 17), batch 32, 1,500 steps (1.3 s
         each on 2 quiet cores of this project's Xeon: ~33 min), AdamW lr 1e-3 with 10% warmup and cosine to 1e-5,
         weight decay 1e-5, gradient clip 2. Planner: MPPI, horizon 35, 100 samples, 10 iterations, 10 elites,
         re-planning every 4 steps over EB-JEPA's 200-step episodes, 200 held-out episodes at the end (~1.0 s
         each; EB-JEPA evaluates 20). Measured: MPPI 28 +- 3% success, CEM 25 +- 3% (README, "World models").
         The reference planner (horizon 90, 200 samples, 20 iterations, every step)
         rolls out 90 x 200 x 20 = 360,000 predictor steps per environment step, ~41x these 35 x 100 x 10 / 4.
  gpu    EB-JEPA's published sizes (examples/ac_video_jepa/cfgs/train.yaml, planning_mppi.yaml): latent 512,
         all 17 frames, batch 384, 12 epochs of 100,000 windows (3,120 steps), bfloat16; planner MPPI, horizon
         90, 200 samples, 20 iterations, 20 elites, one action per plan, 200 steps, 20 episodes, and a random-init
         baseline beside the trained model.
  tiny   A seconds-long run for tests (tiny model, 6 steps, 2 short planning episodes, no pictures or report).

V-JEPA 2-AC (method vjepa2_ac, jepa/methods/vjepa2_ac.py): an action-conditioned block-causal transformer
predictor trained on the tokens of a frozen encoder restored from ac.encoder_workdir, planning with CEM on the
L1 energy to the goal's tokens. Train the encoder first:

  python -m jepa.main --config=configs/vjepa_vit.py:two_rooms --workdir=runs/vjepa_tr
  python -m jepa.main --config=configs/world_model.py:vjepa2_ac --config.ac.encoder_workdir=runs/vjepa_tr \
      --workdir=runs/ac

Its sections: ac (encoder_workdir; the predictor's width, depth, heads, mlp_ratio, rope_layout; frames of each
window; rollout_steps, the reference's auto_steps; normalize, V-JEPA 2's normalize_reps; state 'none' | 'position';
energy 'l1' | 'sq', the planner's distance) and planner (the keys above, with V-JEPA 2-AC's CEM as defaults:
horizon 2, 400 samples, top 10, 10 iterations, momentum 0.15, cost 'last', initial std = the action bound).
  vjepa2_ac       CPU-sized: predictor 64 x 2 with 4 heads, windows of 8 frames (the reference's 8), 2 rollout
                  steps, batch 16, 1,000 steps, AdamW lr 7.5e-5 -> 1e-3 over 10% warmup then cosine to 0, weight
                  decay 0.04 (droid-256px-8f.yaml, but its peak lr is 4.25e-4 over 94,500 steps of 256). Planner:
                  CEM with horizon 2, top 10, momentum 0.15, the first action executed, but 100 samples and 5
                  iterations (the reference's 400 and 10 are 8x the compute per step), 10 episodes of 200 steps.
  vjepa2_ac_tiny  A seconds-long run for tests (tiny predictor, 4 steps, 2 short planning episodes).
"""
from jepa import config as common


def _optim(c, *, num_steps, lr=1e-3):
  """EB-JEPA's AdamW: lr with 10% linear warmup from 0, cosine to 1e-5; weight decay 1e-5; gradient clip 2."""
  c.train.num_steps = num_steps
  c.optim.update(lr=lr, start_lr=0.0, final_lr=1e-5, warmup_steps=max(1, num_steps // 10), weight_decay=1e-5,
                 final_weight_decay=1e-5, grad_clip=2.0)


def _default(c):
  c.world_model.update(latent_dim=64, frames=9)
  c.train.update(batch_size=32, log_every=50, checkpoint_every=250)
  _optim(c, num_steps=1500)
  c.planner.update(kind="mppi", horizon=35, num_samples=100, num_iterations=10, num_elites=10, replan_every=4,
                   episodes=200)
  c.eval.update(batch_size=64, max_train_examples=256, max_eval_examples=256, random_baseline=False,
                evaluators="rankme", pictures=True, picture_examples=3, report=True)


def _gpu(c):
  c.dtype = "bfloat16"
  c.data.update(num_threads=16, prefetch=4)
  steps_per_epoch = 100_000 // 384
  c.train.update(batch_size=384, log_every=50, checkpoint_every=steps_per_epoch)
  _optim(c, num_steps=12 * steps_per_epoch)
  c.eval.update(batch_size=256, max_train_examples=1024, max_eval_examples=1024, random_baseline=True,
                evaluators="rankme", pictures=True, report=True)


def _tiny(c):
  c.world_model.update(latent_dim=8, channels=(4, 4, 4), blocks=1, idm_hidden=8, rollout_steps=3, frames=4)
  c.data.update(num_threads=1, prefetch=1)
  c.train.update(batch_size=8, log_every=1, checkpoint_every=0)  # 8: divisible by tests' 8 simulated devices.
  _optim(c, num_steps=6)
  c.planner.update(horizon=4, num_samples=8, num_iterations=2, num_elites=2, episodes=2, max_steps=8,
                   replan_every=4)
  c.eval.update(batch_size=8, max_train_examples=8, max_eval_examples=8, random_baseline=False, evaluators="",
                pictures=False, report=False)


PRESETS = {"": _default, "gpu": _gpu, "tiny": _tiny}


def _vjepa2_ac(c):
  c.data.source = "two_rooms"
  c.ac.update(width=64, depth=2, heads=4, frames=8, rollout_steps=2)
  c.train.update(batch_size=16, num_steps=1000, log_every=50, checkpoint_every=250)
  c.optim.update(lr=1e-3, start_lr=7.5e-5, final_lr=0.0, warmup_steps=100, weight_decay=0.04,
                 final_weight_decay=0.04, grad_clip=0.0)
  c.planner.update(num_samples=100, num_iterations=5, episodes=10)
  c.eval.update(batch_size=64, max_train_examples=256, max_eval_examples=256, random_baseline=False,
                evaluators="rankme", pictures=True, picture_examples=3, report=True)


def _vjepa2_ac_tiny(c):
  c.data.source = "two_rooms"
  c.data.update(num_threads=1, prefetch=1)
  c.ac.update(width=24, depth=1, heads=2, frames=4, rollout_steps=2)
  c.train.update(batch_size=4, num_steps=4, log_every=1, checkpoint_every=0)
  c.optim.update(lr=1e-3, start_lr=0.0, final_lr=0.0, warmup_steps=1, weight_decay=0.04, final_weight_decay=0.04)
  c.planner.update(num_samples=8, num_iterations=2, num_elites=2, episodes=2, max_steps=4)
  c.eval.update(batch_size=8, max_train_examples=8, max_eval_examples=8, random_baseline=False, evaluators="",
                pictures=False, report=False)


AC_PRESETS = {"vjepa2_ac": _vjepa2_ac, "vjepa2_ac_tiny": _vjepa2_ac_tiny}


def get_config(arg=""):
  arg = arg or ""
  if arg not in PRESETS and arg not in AC_PRESETS:  # Checked here, so that the error lists both methods' presets.
    names = sorted(k for k in {**PRESETS, **AC_PRESETS} if k)
    raise ValueError(f"unknown config argument {arg!r}; choose one of {names}")
  if arg in AC_PRESETS:  # V-JEPA 2-AC: another method on the same task and planner.
    return common.apply_preset(common.method_config("vjepa2_ac"), arg, AC_PRESETS)
  c = common.method_config("world_model")
  c.data.source = "two_rooms"
  return common.apply_preset(c, arg, PRESETS)
