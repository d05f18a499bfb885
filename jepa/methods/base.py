"""The interface every method implements; the training loop only calls these.

A method says what differs between JEPAs and nothing else:
  - `init_model(rngs)`: the trained model (an nnx.Module; e.g. encoder + predictor, or backbone + projector);
  - `ema_target`: the attribute name of the submodule that an EMA target follows (`"encoder"`), or None for
    methods without a teacher (LeJEPA); the loop keeps the EMA copy and passes it to `loss` as `target`;
  - `example_fn(train)`: the per-example data transform (decode → augment → views/masks), run in the grain
    pipeline with a per-example NumPy generator;
  - `loss(model, target, batch, rng)`: (scalar loss, dict of scalar metrics), built from `jepa.losses`;
  - `features(model, target, images)`: frozen features for the probes (no gradient): pooled [B, F], or tokens
    [B, N, D] (the linear probe average-pools them; the attentive probe needs them);
  - `probes`: which probes evaluate the method, from 'linear' and 'attentive' (jepa/finish.py `PROBES`);
  - `validate()`: method-specific config checks that raise one-line ConfigErrors;
  - `extra_evaluations(state, models, mesh)`: the method's own evaluators (IWM: MRR, the world model:
    planning success), {name: value}, run by jepa/evaluation/suite.py beside the probes; `models(state)` gives
    (model, teacher) in eval mode (callable inside jit), `mesh` the devices; none by default.
Hooks for seeing what the model learns (all optional; jepa/pictures.py, jepa/evaluation/evaluators.py):
  - `collapse_monitors`: training metrics watched by the collapse alarm (train.collapse_alarm), those of
    them that the method logs;
  - `view_fn()`: fn(example, rng) -> {'image', 'label'}: one view from the method's training augmentation,
    shaped like an eval input (LiDAR's views); by default the 'image' of the training example;
  - `pictures(example, rng)`: rows of jepa.plots.Panel showing what the method trains on (the input with its
    context / target patches, views, crops); none by default;
  - `token_grid()` and `patch_tokens(model, target, images)`: the patch grid and the tokens [B, N, D] whose
    PCA is drawn as RGB; None (no PCA picture) by default;
  - `evaluation_pictures(state)`: {name: draw(path)}, pictures of what `extra_evaluations` did on the same
    state (the world model: its planned episodes), drawn from what it kept rather than by evaluating again;
    none by default.
"""
import abc

import jax
import numpy as np

from jepa import plots  # noqa: F401  (re-exported for methods)
from jepa import schedules
from jepa.errors import ConfigError  # noqa: F401  (re-exported for methods)
from jepa.data import augment


class Method(abc.ABC):
  """Base class: holds the config and the pieces every image method shares."""

  ema_target = None  # Name of the submodule followed by the EMA target, or None.
  probes = ("linear",)  # Probes run on `features` (jepa/evaluation/suite.py).
  # Collapse monitors for train.collapse_alarm; the alarm watches those the method's loss logs.
  collapse_monitors = ("target_feature_std", "embedding_std", "rankme")

  def __init__(self, config):
    self.config = config

  # --- randomness and shared loss terms ----------------------------------------------------------------------
  # The step key of `loss(..., rng)` is split by purpose, so that turning one use on cannot change another's.
  DROP_PATH, SIGREG = 0, 1

  @staticmethod
  def step_key(rng, purpose):
    """fold_in(rng, purpose), or None without a key (direct calls in evaluation or tests)."""
    return None if rng is None else jax.random.fold_in(rng, purpose)

  # --- the method's own parts -------------------------------------------------------------------------------
  @abc.abstractmethod
  def init_model(self, rngs):
    """Returns the trained nnx.Module."""

  @abc.abstractmethod
  def example_fn(self, train):
    """Returns fn(example, rng) -> dict of NumPy arrays (one training example)."""

  @abc.abstractmethod
  def loss(self, model, target, batch, rng):
    """Returns (loss, metrics) for a batch; `target` is the EMA copy of `ema_target` or None."""

  @abc.abstractmethod
  def features(self, model, target, images):
    """Returns frozen features for the probes: [B, F], or tokens [B, N, D]."""

  def validate(self):
    """Method-specific checks; the base has none."""

  def extra_evaluations(self, state, models, mesh):
    """{name: float} from the method's own evaluators on the train state `state`; none here."""
    del state, models, mesh
    return {}

  # --- pictures and views (optional hooks) -----------------------------------------------------------------
  def view_fn(self):
    """fn(example, rng) -> {'image', 'label'}: one training-augmentation view shaped like an eval input.

    The default keeps the 'image' of the training example (the masks it also draws are not applied).
    """
    train_fn = self.example_fn(train=True)

    def fn(example, rng):
      out = train_fn(example, rng)
      return {"image": out["image"], "label": out["label"]}

    return fn

  def pictures(self, example, rng):
    """Rows of jepa.plots.Panel showing one example as the method trains on it; [] draws nothing."""
    del example, rng
    return []

  def evaluation_pictures(self, state):
    """{name: fn(path) writing a PNG} of the last `extra_evaluations` on this `state` object; none here."""
    del state
    return {}

  def token_grid(self):
    """The patch grid (h, w) or (t, h, w) of `patch_tokens`, or None when there is no PCA picture."""
    return None

  def patch_tokens(self, model, target, images):
    """Patch tokens [B, N, D] (row-major over `token_grid()`) of the encoder the probes read."""
    raise NotImplementedError(f"{type(self).__name__} draws no PCA picture (token_grid() is None)")

  def display(self, image):
    """A normalised image (or clip) back in [0, 1] for drawing."""
    data = self.config.data
    return np.clip(np.asarray(image) * np.asarray(data.std) + np.asarray(data.mean), 0.0, 1.0)

  # --- shared helpers ---------------------------------------------------------------------------------------
  def schedules(self, num_steps):
    return schedules.from_config(self.config.optim, self.config.ema, num_steps)

  def eval_example_fn(self):
    """Deterministic eval transform shared by image methods: resize + centre crop, normalise."""
    data = self.config.data

    def fn(example, rng):
      del rng
      image = augment.to_rgb(example["image"])
      image = augment.center_crop_resize(image, data.image_size)
      image = augment.normalize(image, data.mean, data.std)
      return {"image": image.astype(np.float32), "label": np.int32(example["label"])}

    return fn
