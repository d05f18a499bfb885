r"""LeJEPA: multi-crop views, backbone + BN-MLP projector, (1 - lam) * invariance + lam * SIGReg; no teacher.

  python -m jepa.main --config=configs/lejepa_vit.py --workdir=runs/lejepa             # CPU, embedded digits
  python -m jepa.main --config=configs/lejepa_vit.py:in1k_vith14 --workdir=gs://...     # the paper's ViT-H/14
  python -m jepa.main --config=configs/lejepa_vit.py:imagenette_vits8 --workdir=runs/in # MINIMAL.md's ViT-S/8
  python -m jepa.main --config=configs/lejepa_vit.py:cifar10_resnet18 --workdir=runs/c  # CIFAR-10 ResNet-18

Presets (the text after ':'):
  ''                ViT (width 96, depth 4, 4 heads, patch 4) on scikit-learn's 8x8 digits at 16 px: offline,
                    minutes on 2 CPU cores including the probes. Views tuned for 8x8 digits: 4 global crops of
                    50-100% and no local views (a 5-30% crop of an 8x8 digit is a few pixels that no longer
                    show the digit), no flip (a mirrored digit is another digit), no solarisation, light blur;
                    projector 512-512 -> 32; 256 slices (plenty for a 32-d output; the base default is the
                    paper's 1024); lam 0.05 convex; AdamW lr 1e-3, wd 0.05; batch 64, 400 steps. The probe's
                    eval split is a 30% carve-out (539 images), so accuracies are measured to about +-1%.
                    Measured linear probe (the earlier 200-step probe), seeds 0 / 1 / 2: trained 0.974 / 0.981 /
                    0.967 vs random init 0.909 / 0.879 / 0.861; the command above: 0.970 vs 0.909. With the
                    converged probe (L2 on a hold-out) the command above gives 0.961 vs 0.920.
  in1k_vith14       Balestriero & LeCun 2025 (ImageNet-1k, 79% linear with ViT-H/14): ViT-H/14 at 224 px; 2
                    global views (224 px, scale 0.3-1) + 6 local views (98 px as in the LeJEPA README; the
                    paper's 96 is not a multiple of the patch, 14; scale 0.05-0.3); flip 0.5, jitter (0.4,
                    0.4, 0.2, 0.1) p 0.8, grayscale 0.2, blur 0.5, solarize 0.2; projector 2048-2048 -> 64
                    (the best output width of the paper's Table 1d); lam 0.05 convex; 1024 slices (the paper's
                    recommendation); drop-path 0.1 (the IN-1k launch templates); AdamW lr 5e-4, wd 0.05
                    constant, warmup then cosine to lr/1000; bf16; FSDP over every device and remat (on v5e-64
                    data parallelism needs 19.6 GiB of 16 and libtpu refuses it; FSDP + remat take 4.1 GiB; on
                    v5p-64 data parallelism without remat fits in 34.1 GiB of 95: pass --config.mesh.data=-1
                    --config.mesh.fsdp=1 --config.model.remat=false there; experiments/results/aot.md). The
                    paper does not give the epoch count of the 79% run (issue #35): 100 epochs at batch 1024
                    here (its ViT-L ablation length), 10 of them warmup.
  imagenette_vits8  MINIMAL.md (90.7% linear after 800 epochs): ViT-S/8 at 128 px; 4 views of one kind (RRC
                    scale 0.08-1, so num_global=4, num_local=0: the centre is the mean of all 4 views); jitter
                    (0.8, 0.8, 0.8, 0.2) p 0.8, grayscale 0.2, blur 0.5, solarize 0.2, flip 0.5; projector
                    2048-2048 -> 16; lam 0.02 convex; 256 slices; AdamW lr 2e-3, wd 0.05, batch 256, 1 warmup
                    epoch, then cosine to eta_min 1e-3 as written in MINIMAL.md. Data:
                    ../shared/data/imagenette96/train.npz holds 96 px images, so the 128 px views are
                    upsampled (MINIMAL.md reads 160 px images); validation is the 10% carve-out of train.
                    Drop-path 0.1 as MINIMAL.md's timm model.
  cifar10_resnet18  CIFAR-10 ResNet-18 (CIFAR stem) with EB-JEPA's views for its SIGReg result (91.02% linear,
                    300 epochs): 2 views at 32 px, RRC scale 0.2-1, jitter (0.4, 0.4, 0.2, 0.1) p 0.8,
                    grayscale 0.2, solarize 0.1, flip 0.5, no blur; projector 2048-2048 -> 128; batch 256, 300
                    epochs, 10 of them warmup; with LeJEPA's objective and optimiser (lam 0.05 convex, 1024
                    slices, AdamW lr 5e-4, wd 5e-4 constant, cosine to lr/1000) instead of EB-JEPA's LARS.
                    Data: ../shared/data/cifar10/train.npz; validation is the 10% carve-out.
  cifar10_cpu       CIFAR-10 for a 2-core CPU budget (issue #17's 21.6 minutes): ResNet-18 (CIFAR stem), stem and
                    first stage at width 16 for step speed, stage widths 16/32/64/256 (lejepa.resnet_stage_widths:
                    the last stage is doubled for a 256-d embedding); EB-JEPA's 2 views (RRC 0.2-1, jitter p 0.8,
                    grayscale 0.2, solarize 0.1, flip, no blur), trained at 16 px (lejepa.global_size) and probed
                    at 32 px; projector 1024-1024 -> 128; 1024 slices; lam 0.05; AdamW lr 2e-3, wd 5e-4, 200
                    warmup steps, cosine; batch 64, 6,964 steps (9.9 epochs of the 45,000-image carve: 21.6
                    minutes at the 0.186 s/step budget.py measured on a 2-core Xeon with AVX-512/AMX,
                    2026-12-03; budget.py --minutes sets the count for the machine at hand). The 16 px views pay
                    because model.conv='auto' runs the 2 x 2 and strided convolutions as im2col (0.58 s/step with
                    XLA's convolutions, jepa/models/conv.py). Measured
                    (experiments/results/budget/lejepa_cpu_g16_im2col.json): linear probe 0.601, kNN 0.555 on the
                    5,000-image carve (raw pixels 0.411, random init 0.361), 22.1 min of training. With the views
                    at 24 px (the preset before; 0.362 s/step on that Xeon) a 2-core AMD EPYC's budget held 4,677
                    steps: 0.603 / 0.571 (lejepa_cifar10_cpu_epyc.json), a 2.0 GHz Xeon's 2,143: 0.549 / 0.511
                    (lejepa_cifar10_cpu_spr.json). docs/fidelity.md has every lever measured.
  imagenette_cpu    Imagenette at 96 px for the same 2-core budget: cifar10_cpu's recipe with a ResNet-18 at width 32
                    and the ImageNet stem (7x7 stride 2 + max-pool: the first stage runs at 12 x 12), global views
                    trained at 48 px (lejepa.global_size) and probed at 96 px; validation is the 10% carve-out
                    (947 images). Probing at the data's 96 px rather than 64 px (3 x 3 maps in the last stage
                    instead of 2 x 2; the views are 20-100% crops at 48 px, so objects in them span the sizes
                    of both) is worth 6 points on the same checkpoint, measured below.
                    Measured (budget.py --minutes=21.6 on a 2-core Xeon with AVX-512/AMX, 2026-12-03, load
                    1.3-2.7: 0.29 s/step with model.conv='auto', 4,426 steps = 33.2 epochs in 21.3 min;
                    experiments/results/budget/lejepa_imagenette_cpu_96.json): linear probe 0.675, kNN 0.637
                    (raw pixels at 96 px 0.379, random init 0.401): +29.6 points over raw pixels. The 64 px
                    preset before it (3,817 steps) gave 0.628 / 0.601 probed at 64 px (raw pixels at 64 px
                    0.391: +23.8) and 0.688 / 0.617 when its checkpoint was probed at 96 px
                    (lejepa_imagenette_cpu_im2col_probe96.json). With XLA's convolutions (0.73 s/step; the last
                    stage runs at 2 x 2) an earlier Xeon's budget held 1,799 steps at 64 px: 0.566 / 0.498
                    (lejepa_imagenette_cpu.json). A 512-wide last stage: 3,052 steps, 0.622 / 0.560
                    (lejepa_imagenette_cpu_s512.json), and views at 40 px (0.256 s/step): 4,879 steps,
                    0.627 / 0.578 (lejepa_imagenette_cpu_g40.json), both at 64 px: neither kept.
  tiny              A seconds-long run for tests: only the method's probe, no pictures or report (tests turn
                    them on where they check them).
"""
from jepa import config as common


def _lejepa_optim(c, *, lr, weight_decay, warmup_steps):
  """AdamW, linear warmup from 0, cosine to lr/1000, constant weight decay (the LeJEPA README recipe)."""
  c.optim.update(lr=lr, start_lr=0.0, final_lr=lr / 1000.0, warmup_steps=warmup_steps,
                 weight_decay=weight_decay, final_weight_decay=weight_decay)


def _default(c):
  # 8x8 digits: a flip or a small crop changes the digit, so the views are 4 global crops of 50-100% of the
  # image (no local views, no flip, no solarisation, light blur; measured in the module docstring).
  c.data.update(source="digits", image_size=16, eval_fraction=0.3)
  c.model.patch_size = 4
  c.model.encoder.update(size="tiny", width=96, depth=4, heads=4)
  c.lejepa.update(backbone="vit", num_global=4, num_local=0, global_scale=(0.5, 1.0), flip=0.0, jitter_p=0.5,
                  blur=0.2, blur_sigma=(0.1, 0.8), solarize=0.0, proj_hidden=512, proj_dim=32, num_slices=256)
  c.train.update(batch_size=64, num_steps=400, log_every=50, checkpoint_every=200)
  _lejepa_optim(c, lr=1e-3, weight_decay=0.05, warmup_steps=40)
  c.eval.update(batch_size=256)


def _in1k_vith14(c):
  c.data.update(source="tfds", name="imagenet2012", data_dir="", train_split="train", eval_split="validation",
                image_size=224, num_threads=16, prefetch=4)
  c.model.update(patch_size=14, remat=True)
  c.mesh.update(data=1, fsdp=-1)  # Fits v5e-64 (16 GiB) with remat; see the docstring.
  c.model.encoder.update(size="huge", width=0, depth=0, heads=0, drop_path=0.1)
  c.lejepa.update(backbone="vit", num_global=2, num_local=6, local_size=98, global_scale=(0.3, 1.0),
                  local_scale=(0.05, 0.3), flip=0.5, jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=0.8, grayscale=0.2,
                  blur=0.5, blur_sigma=(0.1, 2.0), solarize=0.2, lam=0.05, form="convex", num_slices=1024,
                  proj_hidden=2048, proj_dim=64, proj_layers=3, chunk_size=256)
  steps_per_epoch = 1251  # 1,281,167 images / 1024
  c.train.update(batch_size=1024, num_steps=100 * steps_per_epoch, log_every=100,
                 checkpoint_every=steps_per_epoch)
  _lejepa_optim(c, lr=5e-4, weight_decay=0.05, warmup_steps=10 * steps_per_epoch)
  c.dtype = "bfloat16"
  c.eval.update(batch_size=1024, max_train_examples=1_281_167, max_eval_examples=50_000)


def _imagenette_vits8(c):
  c.data.update(source="npz", path="../shared/data/imagenette96/train.npz", eval_fraction=0.1, image_size=128,
                num_threads=8)
  c.model.patch_size = 8
  c.model.encoder.update(size="small", width=0, depth=0, heads=0, drop_path=0.1)
  c.lejepa.update(backbone="vit", num_global=4, num_local=0, global_scale=(0.08, 1.0), flip=0.5,
                  jitter=(0.8, 0.8, 0.8, 0.2), jitter_p=0.8, grayscale=0.2, blur=0.5, blur_sigma=(0.1, 2.0),
                  solarize=0.2, lam=0.02, form="convex", num_slices=256, proj_hidden=2048, proj_dim=16,
                  proj_layers=3)
  steps_per_epoch = 33  # 8,522 training images (90% of 9,469) / 256, rounded down
  c.train.update(batch_size=256, num_steps=800 * steps_per_epoch, log_every=steps_per_epoch,
                 checkpoint_every=20 * steps_per_epoch)
  _lejepa_optim(c, lr=2e-3, weight_decay=0.05, warmup_steps=steps_per_epoch)
  c.optim.final_lr = 1e-3  # MINIMAL.md: CosineAnnealingLR(eta_min=1e-3).
  c.eval.update(batch_size=256)


def _cifar10_resnet18(c):
  c.data.update(source="npz", path="../shared/data/cifar10/train.npz", eval_fraction=0.1, image_size=32,
                crop_ratio=(0.75, 4.0 / 3.0), num_threads=8)
  c.lejepa.update(backbone="resnet18", resnet_width=64, cifar_stem=True, num_global=2, num_local=0,
                  global_scale=(0.2, 1.0), flip=0.5, jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=0.8, grayscale=0.2,
                  blur=0.0, solarize=0.1, lam=0.05, form="convex", num_slices=1024, proj_hidden=2048,
                  proj_dim=128, proj_layers=3)
  steps_per_epoch = 175  # 45,000 training images (90% of 50,000) / 256, rounded down
  c.train.update(batch_size=256, num_steps=300 * steps_per_epoch, log_every=steps_per_epoch,
                 checkpoint_every=10 * steps_per_epoch)
  _lejepa_optim(c, lr=5e-4, weight_decay=5e-4, warmup_steps=10 * steps_per_epoch)
  c.eval.update(batch_size=500)


def _cifar10_cpu(c):
  """CIFAR-10 in a 21.6-minute budget on 2 CPU cores (issue #17): cifar10_resnet18's data and views on a narrow
  ResNet-18, a smaller projector and a short schedule."""
  _cifar10_resnet18(c)
  c.data.num_threads = 2
  # 1024 SIGReg slices (cifar10_resnet18's count): +2.0 linear points over 256 at the same 5,072 steps on a
  # 2-core EPYC (lejepa_cpu_epyc_s256_sl1024.json against lejepa_cpu_epyc_s256.json); SIGReg at 1024 slices is
  # ~4% of a CIFAR ResNet-18 step (experiments/results/sigreg_share.md).
  # Views at 16 px: 1.9x the steps of 24 px in the same minutes with model.conv='auto' (docs/fidelity.md).
  c.lejepa.update(resnet_width=16, resnet_stage_widths=(16, 32, 64, 256), num_slices=1024, proj_hidden=1024,
                  global_size=16)
  # 21.6 minutes at 0.186 s/step (2-core Xeon with AVX-512/AMX, 2026-12-03); experiments/budget.py --minutes
  # measures it on the machine at hand.
  c.train.update(batch_size=64, num_steps=6964, log_every=100, checkpoint_every=1000)
  _lejepa_optim(c, lr=2e-3, weight_decay=5e-4, warmup_steps=200)
  c.eval.update(max_train_examples=45_000, max_eval_examples=5_000)


def _imagenette_cpu(c):
  """Imagenette at 96 px in a 21.6-minute budget on 2 CPU cores (issue #17): cifar10_cpu's recipe on a ResNet-18
  with the ImageNet stem (stride 4 before the first stage: 12 x 12 maps for the 48 px views) at width 32 (a
  256-d embedding), global views trained at 48 px and probed at the data's 96 px."""
  _cifar10_cpu(c)
  c.data.update(path="../shared/data/imagenette96/train.npz", eval_fraction=0.1, image_size=96)
  c.lejepa.update(resnet_width=32, resnet_stage_widths=(), cifar_stem=False, global_size=48)
  # 21.6 minutes at 0.29 s/step (2-core Xeon with AVX-512/AMX, 2026-12-03; budget.py --minutes measures it).
  c.train.update(num_steps=4426, log_every=50, checkpoint_every=1000)
  c.eval.update(batch_size=250, max_train_examples=8_522, max_eval_examples=947)


def _tiny(c):
  c.data.update(source="digits", image_size=16, num_threads=1)
  c.model.patch_size = 4
  c.model.encoder.update(size="tiny", width=32, depth=1, heads=2)
  c.lejepa.update(backbone="vit", num_global=2, num_local=2, local_size=8, proj_hidden=32, proj_dim=8,
                  num_slices=16)
  c.train.update(batch_size=8, num_steps=3, log_every=1, checkpoint_every=0)
  _lejepa_optim(c, lr=5e-4, weight_decay=0.05, warmup_steps=2)
  c.eval.update(batch_size=64, max_train_examples=256, max_eval_examples=128, random_baseline=False,
                evaluators="probes", pictures=False, report=False)


PRESETS = {"": _default, "in1k_vith14": _in1k_vith14, "imagenette_vits8": _imagenette_vits8,
           "cifar10_resnet18": _cifar10_resnet18, "cifar10_cpu": _cifar10_cpu, "imagenette_cpu": _imagenette_cpu,
           "tiny": _tiny}


def get_config(arg=""):
  c = common.method_config("lejepa")
  return common.apply_preset(c, arg or "", PRESETS)
