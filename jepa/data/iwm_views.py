"""IWM views: a target and a masked source view of one image, and the action that maps one to the other.

Image World Models (Garrido et al., 2024) train the predictor to apply a known transformation in latent space.
From one image I (NumPy, in the data pipeline, all randomness from the example's generator):

  I' = flip(crop(I))                       shared geometry (crop scale / ratio and flip from data.*)
  y  = jitter_t(I')                        target view: colour jitter only, keeps the information
  x  = solarize(blur(gray(jitter_s(I'))))  source view: an independent jitter, then destructive ops
  mask: the union U of `masks.num_targets` blocks (masks.MultiBlock2D with a whole-grid context block), so the
        context is every patch outside U and the predictor fills in U.

The geometric part (crop, flip, mask) is the same for both views and reaches the predictor through the
position embeddings of its mask tokens; the action carries only the photometric difference:

  a = ( (f_t - f_s) / r ,  blur, gray, solarize )   in [-1, 1]^4 x {0, 1}^3   (ACTION_DIM = 7)

with f = (brightness, contrast, saturation, hue) the *effective* jitter factors of a view
(`augment.jitter_action`: (1, 1, 1, 0) when the jitter did not fire), and r the width of each factor's range,
so every difference lies in [-1, 1]: r = (1 + x) - max(0, 1 - x) for brightness, contrast and saturation with
strength x (0.8, 0.8, 0.4 for the paper's 0.4 / 0.4 / 0.2), and r = 2 * hue (0.2) for the hue shift (turns of
the colour wheel). A zero strength gives r = 1 (the difference is then always 0). The flags are 1 when the
destructive op was applied to the source. The null action a = 0 means "the same view": no colour change,
nothing destroyed.

The random stream of one example is fixed: crop, flip, target jitter (5 draws), source jitter (5), grayscale
(1), blur (2), solarize (1), then the mask sampler; every op draws the same number of values whether it fires
or not (see jepa.data.augment), so the same (seed, example) gives the same views, action and mask.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jepa import masks as masks_lib
from jepa.data import augment

ACTION_NAMES = ("brightness", "contrast", "saturation", "hue", "blur", "grayscale", "solarize")
ACTION_DIM = len(ACTION_NAMES)


@dataclasses.dataclass(frozen=True)
class Jitter:
  """Colour-jitter strengths (torchvision ColorJitter semantics) and the probability that it fires."""
  p: float = 0.8
  brightness: float = 0.4
  contrast: float = 0.4
  saturation: float = 0.2
  hue: float = 0.1

  def __call__(self, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    return augment.color_jitter(img, rng, brightness=self.brightness, contrast=self.contrast,
                                saturation=self.saturation, hue=self.hue, p=self.p)

  @property
  def ranges(self) -> np.ndarray:
    """Width of each factor's range [4]: the largest |difference| of two draws; 1 where the strength is 0."""
    widths = [(1.0 + x) - max(0.0, 1.0 - x) for x in (self.brightness, self.contrast, self.saturation)]
    widths.append(2.0 * self.hue)
    return np.asarray([w if w > 0 else 1.0 for w in widths], np.float32)


def action_vector(target_jitter: dict[str, Any], source_jitter: dict[str, Any], *, blur: bool,
                  grayscale: bool, solarize: bool, jitter: Jitter) -> np.ndarray:
  """The normalised action a_{x -> y} [ACTION_DIM] float32 (see the module docstring).

  Args:
    target_jitter: the target view's `augment.color_jitter` parameters.
    source_jitter: the source view's.
    blur: whether the source was blurred.
    grayscale: whether the source was turned to grayscale.
    solarize: whether the source was solarized.
    jitter: the strengths both jitters were drawn with (for the normalisation).
  """
  delta = augment.jitter_action(target_jitter) - augment.jitter_action(source_jitter)
  flags = np.asarray([blur, grayscale, solarize], np.float32)
  return np.concatenate([delta / jitter.ranges, flags]).astype(np.float32)


def union_mask_sampler(grid: tuple[int, int], masks_cfg: Any) -> masks_lib.MultiBlock2D:
  """MultiBlock2D whose context block is the whole grid, so its context is the complement of the targets."""
  return masks_lib.MultiBlock2D(
      grid=tuple(grid), num_targets=masks_cfg.num_targets, target_scale=tuple(masks_cfg.target_scale),
      target_aspect=tuple(masks_cfg.target_aspect), context_scale=(1.0, 1.0), context_aspect=(1.0, 1.0),
      min_context=masks_cfg.min_context, allow_overlap=False)


def _fixed_length(rng: np.random.Generator, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """Exactly k slots: a longer list is subsampled uniformly (then sorted), a shorter one padded as invalid."""
  out = np.empty(k, np.int32)
  valid = np.zeros(k, bool)
  if idx.size > k:
    out[:] = np.sort(rng.choice(idx, size=k, replace=False, shuffle=False))
    valid[:] = True
  else:
    out[:idx.size] = idx
    out[idx.size:] = idx[0] if idx.size else 0
    valid[:idx.size] = True
  return out, valid


@dataclasses.dataclass(frozen=True)
class UnionMask:
  """The IWM source mask: context = patches outside the union of the blocks, targets = the union.

  Sizes are fixed for one compilation: Kc = the sampler's context size (the expected number of free patches,
  at least min_context) and Ku = N - Kc, the expected size of the union. A larger set is subsampled
  uniformly and a smaller one padded with invalid slots (as masks.MultiBlock2D does for its blocks), so the
  loss is an unbiased estimate of the mean over the whole union.
  """
  sampler: masks_lib.MultiBlock2D

  @property
  def num_context(self) -> int:
    return self.sampler.num_context

  @property
  def num_target(self) -> int:
    return max(1, self.sampler.num_patches - self.sampler.num_context)

  def sample(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """context_idx [Kc], context_valid [Kc], target_idx [1, Ku], target_valid [1, Ku] (one target 'block')."""
    out = self.sampler.sample(rng, debug=True)
    union = np.zeros(self.sampler.grid, bool)
    for top, left, h, w in out["target_boxes"]:
      union[top:top + h, left:left + w] = True
    target_idx, target_valid = _fixed_length(rng, np.flatnonzero(union), self.num_target)
    return {"context_idx": out["context_idx"], "context_valid": out["context_valid"],
            "target_idx": target_idx[None], "target_valid": target_valid[None]}


@dataclasses.dataclass(frozen=True)
class IWMViews:
  """Per-example transform for IWM training: fn(example, rng) -> the batch entries of one example.

  Returns `image` (target view y), `source` (source view x), both normalised float32 [H, W, 3]; `action`
  [ACTION_DIM]; the UnionMask entries; `label`.
  """
  image_size: int
  mask: UnionMask
  jitter: Jitter = Jitter()
  blur_p: float = 0.2
  grayscale_p: float = 0.2
  solarize_p: float = 0.2
  crop_scale: tuple[float, float] = (0.3, 1.0)
  crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
  flip: bool = True
  mean: tuple[float, ...] = augment.IMAGENET_MEAN
  std: tuple[float, ...] = augment.IMAGENET_STD

  def views(self, image: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    """Unnormalised views in [0, 1] and the action (for tests and plots)."""
    image = augment.to_rgb(image)
    shared, _ = augment.random_resized_crop(image, rng, self.image_size, scale=tuple(self.crop_scale),
                                            ratio=tuple(self.crop_ratio))
    # The flip always draws its coin, so the stream does not depend on data.flip.
    shared, _ = augment.hflip(shared, rng, p=0.5 if self.flip else 0.0)
    target, target_jitter = self.jitter(shared, rng)
    source, source_jitter = self.jitter(shared, rng)
    source, gray = augment.grayscale(source, rng, p=self.grayscale_p)
    source, blur = augment.gaussian_blur(source, rng, p=self.blur_p)
    source, sol = augment.solarize(source, rng, p=self.solarize_p)
    action = action_vector(target_jitter, source_jitter, blur=bool(blur["blur"]),
                           grayscale=bool(gray["grayscale"]), solarize=bool(sol["solarize"]),
                           jitter=self.jitter)
    return {"target": target, "source": source, "action": action}

  def __call__(self, example: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    v = self.views(example["image"], rng)
    out = self.mask.sample(rng)
    out["image"] = augment.normalize(v["target"], self.mean, self.std).astype(np.float32)
    out["source"] = augment.normalize(v["source"], self.mean, self.std).astype(np.float32)
    out["action"] = v["action"]
    out["label"] = np.int32(example["label"])
    return out


@dataclasses.dataclass(frozen=True)
class MRRViews:
  """Per-example transform for the MRR evaluator: a clean image, a bank of jittered versions, their actions.

  The clean image is the eval view (resize + centre crop, no colour change). Bank item j is the clean image
  under a jitter drawn with probability 1 (so no two items coincide, as un-jittered copies would), and its
  action is that jitter against the identity with no destructive flag: a_j = ((f_j - (1, 1, 1, 0)) / r, 0, 0,
  0). The source mask is drawn as in training.

  Returns `source` [H, W, 3], `bank` [N, H, W, 3] (normalised float32), `action` [N, ACTION_DIM], the
  UnionMask entries and `label`.
  """
  image_size: int
  mask: UnionMask
  bank_size: int = 16
  jitter: Jitter = Jitter()
  mean: tuple[float, ...] = augment.IMAGENET_MEAN
  std: tuple[float, ...] = augment.IMAGENET_STD

  def __call__(self, example: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    clean = augment.center_crop_resize(augment.to_rgb(example["image"]), self.image_size)
    always = dataclasses.replace(self.jitter, p=1.0)
    identity = {"applied": np.bool_(False)}
    bank, actions = [], []
    for _ in range(self.bank_size):
      img, params = always(clean, rng)
      bank.append(augment.normalize(img, self.mean, self.std))
      actions.append(action_vector(params, identity, blur=False, grayscale=False, solarize=False,
                                   jitter=self.jitter))
    out = self.mask.sample(rng)
    out["source"] = augment.normalize(clean, self.mean, self.std).astype(np.float32)
    out["bank"] = np.stack(bank).astype(np.float32)
    out["action"] = np.stack(actions)
    out["label"] = np.int32(example["label"])
    return out
