"""Collapse alarm, config checks, and one tiny run end to end: evaluators in the logs, pictures, report.md."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from jepa import config as config_lib
from jepa import metrics
from jepa import pictures
from jepa import train
from jepa.errors import ConfigError
from tests.helpers import load_config
from tests.test_plots import _check_cells, _layout, _read


def test_alarm_fires_on_each_downward_crossing():
  alarm = metrics.CollapseAlarm(("std", "rankme"), fraction=0.5, early_logs=2)
  values = {1: 0.4, 2: 0.6, 3: 0.3, 4: 0.2, 5: 0.26, 6: 0.24, 7: float("nan"), 8: 0.1}
  fired = {s: alarm.observe(s, {"std": v, "other": 0.0}) for s, v in values.items()}
  # early = (0.4 + 0.6) / 2 = 0.5, threshold 0.25: step 3 (0.3) is above it, 4 falls below (fires), 5
  # recovers, 6 falls again (fires), 7 is NaN (ignored), 8 stays below (no new alarm).
  assert [s for s, f in fired.items() if f] == [4, 6]
  a = fired[4][0]
  assert a["metric"] == "std" and a["value"] == 0.2 and a["early"] == pytest.approx(0.5)
  assert a["threshold"] == pytest.approx(0.25)
  assert "WARNING: collapse alarm at step 4: std" in metrics.alarm_line(a, 0.5)
  assert set(metrics.alarm_row(a)) == {"alarm/std", "alarm/std/early", "alarm/std/threshold"}
  off = metrics.CollapseAlarm(("std",), fraction=0.0)
  assert not any(off.observe(s, {"std": v}) for s, v in values.items())


def test_config_checks_name_the_key():
  for key, value, match in [("train.collapse_alarm", 1.5, "train.collapse_alarm"),
                            ("eval.knn.vote", "soft", "eval.knn.vote"), ("eval.knn.k", 0, "eval.knn.k"),
                            ("eval.few_shot.shots", (1, -2), "eval.few_shot.shots"),
                            ("eval.lidar.views", 1, "eval.lidar.views")]:
    c = load_config("ijepa_vit", "tiny")
    section, name = key.rsplit(".", 1)
    c_section = c
    for part in section.split("."):
      c_section = c_section[part]
    c_section[name] = value
    with pytest.raises(ConfigError, match=match.replace(".", r"\.")):
      config_lib.validate(c, num_devices=1)


def test_tiny_run_writes_evaluations_alarm_pictures_and_report(tmp_path):
  c = load_config("ijepa_vit", "tiny")
  default_eval = config_lib.base_config().eval
  c.eval.update(evaluators=default_eval.evaluators, pictures=True, report=True, random_baseline=False,
                picture_examples=2)
  c.eval.lidar.update(samples=16, views=2)
  c.eval.few_shot.update(trials=1)
  c.train.update(num_steps=6, log_every=1, checkpoint_every=0, collapse_alarm=0.3, collapse_alarm_logs=3)
  workdir = str(tmp_path / "run")
  run = train.setup(c, workdir, verbose=False)
  # Watch the learning rate, which warms up then decays: the alarm step follows from the schedule alone.
  run.method.collapse_monitors = ("lr",)
  lrs = [float(run.state_def.lr_fn(s)) for s in range(6)]         # logged at steps 1..6
  early = np.mean(lrs[:3])
  expected = [s + 1 for s in range(3, 6) if lrs[s] < 0.3 * early]
  assert expected, "the schedule must cross the threshold for this test to mean anything"
  _, results = train.fit(run)

  rows = metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  final = {k: v for r in rows if r["step"] == 6 for k, v in r.items()}
  for key in ("linear", "knn", "few_shot_1", "few_shot_10", "few_shot_all", "rankme", "lidar"):
    assert f"probe/{key}/trained" in final, key
  for key in ("linear", "knn", "few_shot_1", "few_shot_10", "few_shot_all"):
    assert 0.0 <= final[f"probe/{key}/trained"] <= 1.0
  assert 1.0 <= final["probe/lidar/trained"] <= 15.0 + 1e-3        # at most min(F, n - 1) = 15
  alarm_rows = [r for r in rows if "alarm/lr" in r]
  assert [r["step"] for r in alarm_rows] == [expected[0]]
  assert [a["step"] for a in results["alarms"]] == [expected[0]]
  assert os.path.isdir(os.path.join(workdir, "tensorboard"))

  # Pictures: valid PNGs; the mask picture shows exactly the indices the method's hook gives.
  assert set(results["pictures"]) == {"curves", "evaluations", "masks", "pca"}
  for rel in results["pictures"].values():
    with Image.open(os.path.join(workdir, rel)) as im:
      assert im.format == "PNG" and im.size[0] > 0
  subset = pictures._examples(run.config)  # pylint: disable=protected-access
  rows_drawn = pictures.mask_rows(run.method, subset, c.seed)
  scale = pictures._scale(c.data.image_size)  # pylint: disable=protected-access
  pixels = _read(os.path.join(workdir, results["pictures"]["masks"]))
  corners, (height, _) = _layout(rows_drawn, scale)
  assert pixels.shape[0] == height
  from jepa import plots  # pylint: disable=import-outside-toplevel
  colours = plots.layer_colours(rows_drawn)
  assert set(colours) == {"context", "target 1", "target 2", "target 3", "target 4"}
  for i, row in enumerate(rows_drawn):
    for j, panel in enumerate(row):
      if panel.layers:
        _check_cells(pixels, panel, corners[i][j], scale, colours)
  # PCA: one [image, PCA] row per example, each panel image_size * scale pixels.
  pca = _read(os.path.join(workdir, results["pictures"]["pca"]))
  side = c.data.image_size * scale
  assert pca.shape[0] == plots.HEADER + 2 * (plots.TITLE + side + plots.PAD) + plots.PAD

  # The report: config, the evaluation table, the alarm, the pictures by relative path.
  with open(os.path.join(workdir, "report.md"), encoding="utf-8") as f:
    report = f.read()
  assert "## Config" in report and "eval.knn.k = 20" in report
  for key in ("| knn |", "| few_shot_1 |", "| lidar |", "| rankme |", "| linear |"):
    assert key in report, key
  assert f"collapse alarm at step {expected[0]}: lr" in report
  for rel in results["pictures"].values():
    assert f"]({rel})" in report and os.path.exists(os.path.join(workdir, rel))
  with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
    assert json.load(f)["knn"]["trained"] == pytest.approx(final["probe/knn/trained"])


def test_pictures_are_redrawn_at_every_evaluation(tmp_path):
  """eval.every draws the pictures during training: a run stopped right after its first evaluation has them."""
  c = load_config("ijepa_vit", "tiny")
  c.eval.update(every=2, pictures=True, report=False, random_baseline=False, picture_examples=1)
  c.train.update(num_steps=4, log_every=1, checkpoint_every=0)
  workdir = str(tmp_path / "run")
  assert train.fit(train.setup(c, workdir, verbose=False), stop_at=2)[1]["preempted"]
  for name in ("curves", "evaluations", "masks", "pca"):
    with Image.open(os.path.join(workdir, "pictures", f"{name}.png")) as im:
      assert im.format == "PNG" and min(im.size) > 0, name


def test_report_of_a_planning_run_shows_the_planner_and_its_pictures(tmp_path):
  """plan_* results get their own section (numbers, planner settings, pictures) instead of the probe table."""
  from jepa import report  # pylint: disable=import-outside-toplevel
  c = load_config("world_model", "tiny")  # planner: mppi, horizon 4, 8 samples, 2 iterations, 2 elites, ...
  pics = {"curves": "pictures/curves.png", "plan_success": "pictures/plan_success.png",
          "episodes": "pictures/episodes.png"}
  probes = {"plan_success": {"trained": 0.5}, "plan_steps": {"trained": 6.5}, "plan_final_distance": {"trained": 3.25},
            "plan_seconds_per_episode": {"trained": 0.125}, "rankme": {"trained": 3.5}}
  with open(report.write_report(str(tmp_path), c, {"step": 6, "pictures": pics, "alarms": []}, probes),
            encoding="utf-8") as f:
    text = f.read()
  planning = text[text.index("## Planning (held-out episodes)"):text.index("## Evaluations")]
  assert ("mppi planner in the model's latent space: horizon 4, 8 samples, 2 iterations, 2 elites, re-planning "
          "every 4 steps, cost `sum`, energy: squared error to the goal's latent; 2 episodes of 8 steps (level "
          "`normal`), seed 0.") in planning
  assert "| result | what | trained |\n" in planning                 # no random init ran: no column for it
  assert "| 0.5 (1 of 2) |" in planning and "| 6.5 |" in planning and "never = 8" in planning
  assert "| 3.25 |" in planning and "| 0.125 |" in planning
  assert "![plan_success](pictures/plan_success.png)" in planning and "![episodes](pictures/episodes.png)" in planning
  others = text[text.index("## Evaluations"):]
  assert "| rankme |" in others and "plan_" not in others.split("## Pictures")[0]
  assert text.count("](pictures/episodes.png)") == 1 and "![curves](pictures/curves.png)" in others
  assert "world model: IMPALA encoder (4, 4, 4) x 1 blocks -> latent 8" in text and "patch 4" not in text
  # A random-init baseline adds its column; without other evaluators there is no evaluation table.
  probes = {k: dict(v, random_init=0.0) for k, v in probes.items() if k != "rankme"}
  with open(report.write_report(str(tmp_path), c, {"step": 6}, probes), encoding="utf-8") as f:
    text = f.read()
  assert "| result | what | trained | random init |\n" in text and "| 0.5 (1 of 2) | 0 (0 of 2) |" in text
  assert "## Evaluations" not in text and "No pictures (eval.pictures=False)." in text
  # V-JEPA 2-AC plans on its ac.energy, L1 by default.
  ac = load_config("world_model", "vjepa2_ac_tiny")
  with open(report.write_report(str(tmp_path), ac, {"step": 4}, probes), encoding="utf-8") as f:
    assert "cost `last`, energy: L1 to the goal's latent;" in f.read()
