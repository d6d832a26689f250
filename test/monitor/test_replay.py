"""Replay: a bag of real messages through the real checkpoints / analytic parents and the Composer; the report's
numbers are recomputed here from the recorded arrays (not from the bag), with a separately built composer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gpc_ros.compose import Composer, ComposerConfig, SamplerConfig, VPTime, make_vp_scheduler
from gpc_ros.compose.analytic import GaussianParent
from gpc_ros.control.envelope import SafetyEnvelopeConfig
from gpc_ros.monitor.replay import ReplayConfig, ReplayParent, replay
from gpc_ros.monitor.replay_cli import main as replay_main
from gpc_ros.monitor.replay_io import load_recording
from gpc_ros.policies import load_policy
from gpc_ros.policies.evaluation import default_sampler

from .recorded import CHECKPOINTS, IMAGE_TOPIC, make_session, write_session

WEIGHTS = np.array([[1.0, 0.0], [0.3, 0.7]])
CHUNKS = 3
# Generous speed and jump limits: the only interventions are workspace clamps, countable from the positions alone.
ENVELOPE = SafetyEnvelopeConfig(workspace_min_m=(0.25, -0.4, 0.05), workspace_max_m=(0.75, 0.4, 0.40),
                                max_speed_m_s=100.0, max_target_jump_m=10.0)


@pytest.fixture(scope="module")
def session():
    return make_session(seed=3)


@pytest.fixture(scope="module")
def bag(session, tmp_path_factory):
    return write_session(session, tmp_path_factory.mktemp("bags") / "session")


def last(times, values, t, n):
    idx = [i for i, s in enumerate(times) if s <= t + 1e-9][-n:]
    assert len(idx) == n
    return np.stack([values[i] for i in idx])


def state_at(session, t):
    """The TCP position measured last at or before t."""
    return session.states_m[np.searchsorted(session.state_times_s, t + 1e-9) - 1].astype(np.float32)


def expected_observations(session, t):
    """What each tiny checkpoint's host answers for t: its last 2 frames at or before t (image centre-cropped
    48x48 -> 32x32; 80 points -> 64 evenly spaced), each with the TCP position measured at or before its stamp."""
    idx = np.flatnonzero(session.image_times_s <= t + 1e-9)[-2:]
    # PIL's box filter: what the cell's demonstrations were recorded with (gpc_ros/sim/observation.py), so what the
    # hosts feed the parents (OpenCV's INTER_AREA differs at non-integer scales)
    imgs = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(session.images[i][:, 8:56])).resize(
        (32, 32), Image.Resampling.BOX)) for i in idx])
    img_state = np.stack([state_at(session, session.image_times_s[i]) for i in idx])
    jdx = np.flatnonzero(session.cloud_times_s <= t + 1e-9)[-2:]
    clouds = session.clouds[jdx][:, np.linspace(0, 79, 64).round().astype(int)]
    cloud_state = np.stack([state_at(session, session.cloud_times_s[j]) for j in jdx])
    return ({"observation.image": imgs[None], "observation.state": img_state[None]},
            {"observation.pointcloud": clouds[None], "observation.state": cloud_state[None]})


def test_checkpoint_replay_matches_an_independent_computation(session, bag):
    policies = [load_policy(CHECKPOINTS / "diffusion_rgb"), load_policy(CHECKPOINTS / "flow_pointcloud")]
    sampler = default_sampler(policies)
    config = ReplayConfig(dt_s=None, max_chunks=CHUNKS, seed=7, sampler=sampler, envelope=ENVELOPE)
    parents = [ReplayParent.from_checkpoint("rgb", CHECKPOINTS / "diffusion_rgb"),
               ReplayParent.from_checkpoint("pcd", CHECKPOINTS / "flow_pointcloud")]
    recording = load_recording(bag, {"image", "points", "state"})
    report = replay(recording, parents, WEIGHTS, config)

    composer = Composer([policies[0].as_parent("rgb"), policies[1].as_parent("pcd")],
                        ComposerConfig(sampler=sampler, return_parent_chunks=False))
    times = session.chunk_times_s[:CHUNKS]
    assert report["chunks"] == CHUNKS and report["error_source"] == "recorded_chunks"
    np.testing.assert_allclose(report["chunk_start_times_s"], times, atol=1e-6)
    np.testing.assert_allclose(report["decision_times_s"], times - 0.1, atol=1e-6)
    for w, row in zip(WEIGHTS, report["results"]):
        paths = []
        for i, t in enumerate(times):
            with torch.no_grad():  # composed from the observation 0.1 s (first_action_delay_s) before the stamp
                out = composer.compose(composer.encode(expected_observations(session, t - 0.1)), w.tolist(),
                                       generator=7 + i)
            paths.append(out.actions[0, 0].double().numpy())
        errors = [np.sqrt(np.mean(np.sum((p - c) ** 2, axis=1))) for p, c in zip(paths, session.chunks_m)]
        seams = [np.linalg.norm(paths[i][0] - paths[i - 1][5]) for i in range(1, CHUNKS)]  # 0.5 s = 5 steps
        outside = sum(int(np.any((p < ENVELOPE.lower_m) | (p > ENVELOPE.upper_m), axis=1).sum()) for p in paths)
        assert row["weights"] == {"rgb": w[0], "pcd": w[1]}
        np.testing.assert_allclose(row["per_chunk"]["error_m"], errors, rtol=1e-4, atol=1e-6)
        assert row["error_m"] == pytest.approx(np.mean(errors), rel=1e-4, abs=1e-6)
        np.testing.assert_allclose(row["per_chunk"]["seam_jump_m"], seams, rtol=1e-4, atol=1e-6)
        assert row["seam_jump_m"]["max"] == pytest.approx(max(seams), rel=1e-4, abs=1e-6)
        assert row["interventions"] == {"rejected_jump": 0, "clamped_workspace": outside, "clamped_speed": 0}
        assert len(row["per_chunk"]["latency_s"]) == CHUNKS and row["latency_s"]["max"] > 0


def gaussian_parents(offsets_m, horizon=8):
    """Analytic parents: target = the last measured TCP position + an offset, tiny variance (exact scores)."""
    parents = []
    for name, offset in offsets_m.items():
        parent = GaussianParent(name, "epsilon", VPTime.from_scheduler(make_vp_scheduler()), horizon, 3, var=1e-8)

        def observe(rec, t, offset=np.asarray(offset)):
            window = rec.streams["state"].window(t, 1)
            if window is None:  # the state stream is in the action layout: the TCP position first (m)
                return None
            return torch.as_tensor(np.tile(window[0][:3] + offset, (horizon, 1)))[None]

        parents.append(ReplayParent(parent, observe, ("state",)))
    return parents


def test_analytic_parents_without_recorded_chunks_compare_with_the_executed_path(session, tmp_path):
    """Gaussian parents with nearly zero variance compose to the weighted mean of their targets (equal variances),
    so the composed chunk is known in closed form: error against the executed path follows from the arrays."""
    path = write_session(session, tmp_path / "no_chunks", storage="sqlite3", skip=("/gpc/action_chunk",))
    parents = gaussian_parents({"left": (0.0, 0.05, 0.0), "right": (0.0, -0.05, 0.0)})
    weights = np.array([[0.5, 0.5], [0.8, 0.2]])
    config = ReplayConfig(dt_s=0.1, replan_period_s=0.5, sampler=SamplerConfig("ddim", 10), envelope=ENVELOPE)
    report = replay(load_recording(path, {"state"}), parents, weights, config)
    assert report["error_source"] == "executed_path"
    times = np.arange(session.state_times_s[0], session.state_times_s[-1] + 1e-9, 0.5)
    assert report["chunks"] == len(times)
    for w, row in zip(weights, report["results"]):
        shift = np.array([0.0, 0.05 * w[0] - 0.05 * w[1], 0.0])
        errors = []
        for t in times:
            current = last(session.state_times_s, session.states_m, t, 1)[0]
            steps = t + 0.1 + 0.1 * np.arange(8)  # the chunk starts first_action_delay_s after its observation
            executed = np.stack([np.interp(steps, session.state_times_s, session.states_m[:, j], left=np.nan,
                                           right=np.nan) for j in range(3)], axis=1)
            ok = np.all(np.isfinite(executed), axis=1)
            errors.append(np.sqrt(np.mean(np.sum((current + shift - executed[ok]) ** 2, axis=1))))
        assert row["error_m"] == pytest.approx(np.mean(errors), abs=2e-4)
        # consecutive chunks are flat at the state 0.5 s apart: the seam is the distance travelled meanwhile
        assert row["seam_jump_m"]["max"] < 0.1


def test_compressed_images_replay_like_raw_ones(session, bag, tmp_path):
    """PNG CompressedImage is lossless: the same pixels, hence the same report numbers."""
    compressed = write_session(session, tmp_path / "compressed", compressed=True)
    policy = load_policy(CHECKPOINTS / "diffusion_rgb")
    config = ReplayConfig(dt_s=None, max_chunks=2, sampler=default_sampler([policy]))
    parent = ReplayParent.from_checkpoint("rgb", CHECKPOINTS / "diffusion_rgb")
    reports = [replay(load_recording(b, {"image", "state"}), [parent],
                      np.array([[1.0]]), config) for b in (bag, compressed)]
    assert reports[0]["results"][0]["per_chunk"]["error_m"] == pytest.approx(
        reports[1]["results"][0]["per_chunk"]["error_m"], rel=1e-6)


def test_cli_writes_table_plot_and_json_and_gates_on_thresholds(bag, tmp_path, capsys):
    args = [str(bag), "--parent", f"rgb={CHECKPOINTS / 'diffusion_rgb'}", "--parent",
            f"pcd={CHECKPOINTS / 'flow_pointcloud'}", "--weights", "0.5", "0.5", "--max-chunks", "2", "--steps", "4"]
    assert replay_main(args + ["--out", str(tmp_path / "ok")]) == 0
    report = json.loads((tmp_path / "ok" / "report.json").read_text())
    assert report["parents"] == ["rgb", "pcd"] and report["chunks"] == 2 and report["violations"] == []
    assert (tmp_path / "ok" / "report.png").stat().st_size > 1000
    assert "w[rgb]" in capsys.readouterr().out
    assert replay_main(args + ["--out", str(tmp_path / "gate"), "--max-error-m", "0.0"]) == 1
    gated = json.loads((tmp_path / "gate" / "report.json").read_text())
    assert len(gated["violations"]) == 1 and "max_error_m" in gated["violations"][0]
    assert "thresholds crossed" in capsys.readouterr().out


def test_image_topic_is_found_or_named(session, tmp_path):
    path = write_session(session, tmp_path / "s", skip=(IMAGE_TOPIC,))
    from gpc_ros.monitor.bag import BagError
    with pytest.raises(BagError, match=r"no colour image topic /camera/<name>/color/image_raw"):
        load_recording(path, {"image", "state"})


def test_cli_replays_with_the_composer_nodes_settings(bag, tmp_path):
    """--composer-config: the graph's composer.yaml (sampler, operator, dt, seed, weights) drives the replay."""
    import yaml

    from gpc_ros.paths import share_dir

    data = yaml.safe_load((share_dir() / "config" / "composer.yaml").read_text())
    block = data["composer"]["ros__parameters"]
    block.update(parents=["rgb", "pcd"], weights=[0.8, 0.2], seed=5, first_action_delay_s=0.2)
    block["composer"]["sampler"]["num_inference_steps"] = 3
    path = tmp_path / "composer.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "report"
    assert replay_main([str(bag), "--parent", f"rgb={CHECKPOINTS / 'diffusion_rgb'}", "--parent",
                        f"pcd={CHECKPOINTS / 'flow_pointcloud'}", "--composer-config", str(path),
                        "--max-chunks", "1", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["sampler"]["num_inference_steps"] == 3 and report["sampler"]["kind"] == "ddim"
    assert report["seed"] == 5 and report["operator"] == "convex" and report["dt_s"] == 0.1
    assert report["first_action_delay_s"] == 0.2
    assert report["decision_times_s"][0] == pytest.approx(report["chunk_start_times_s"][0] - 0.2)
    assert [r["weights"] for r in report["results"]] == [{"rgb": 0.8, "pcd": 0.2}]
