"""``gpc-ros train``: train a parent policy on a dataset of episodes (or on the synthetic reach task).

Examples::

    gpc-ros train --policy diffusion --dataset data/reach --output runs/rgb --synthetic 100 --steps 800 --evaluate
    gpc-ros train --policy dp3 --parameterization epsilon --dataset data/reach --output runs/pcd
    gpc-ros train --policy flow --modality pointcloud --dataset data/reach --output runs/flow --resume

The trained policy (EMA weights) is ``<output>/checkpoint`` (``model.safetensors`` + ``config.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from gpc_ros.policies.dataset import META_FILE, write_episodes
from gpc_ros.policies.factory import POLICY_TYPES
from gpc_ros.policies.presets import SIZES, policy_config
from gpc_ros.policies.training import CHECKPOINT_DIR, TrainConfig, Trainer


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``gpc-ros train``."""
    p = argparse.ArgumentParser(prog="gpc-ros train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", required=True, choices=POLICY_TYPES, help="policy family")
    p.add_argument("--dataset", required=True, type=Path,
                   help="dataset folder: gpc_ros npz episodes (dataset.json) or a LeRobotDataset v3.0 (meta/info.json)")
    p.add_argument("--key", action="append", default=[], metavar="INPUT=FEATURE",
                   help="LeRobot datasets: feed dataset FEATURE to parent INPUT, e.g. "
                        "observation.image=observation.images.front (repeatable)")
    p.add_argument("--image-size", type=int, help="LeRobot datasets: images resized to S x S (default: stored "
                                                  "size if square and <= 96, else 96)")
    p.add_argument("--output", required=True, type=Path, help="run directory (checkpoint, log)")
    p.add_argument("--synthetic", type=int, default=0, metavar="N",
                   help="first write N synthetic reach-task episodes to --dataset (if it holds no dataset yet)")
    p.add_argument("--synthetic-image-size", type=int, default=96, help="synthetic images are S x S (<= 96)")
    p.add_argument("--synthetic-points", type=int, default=512, help="points per synthetic cloud")
    p.add_argument("--size", choices=SIZES, default="small", help="model size preset (small = shipped)")
    p.add_argument("--modality", choices=("image", "pointcloud"), help="flow only: which encoder")
    p.add_argument("--parameterization", choices=("epsilon", "sample", "v_prediction"),
                   help="dp3 only: what the network predicts (default sample)")
    defaults = TrainConfig()
    p.add_argument("--steps", type=int, default=defaults.steps)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--val-fraction", type=float, default=defaults.val_fraction)
    p.add_argument("--val-every", type=int, default=defaults.val_every)
    p.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--action-normalization-from", default="", metavar="PARENT",
                   help="use this checkpoint's (folder or shipped name) action normalisation instead of fitting one, "
                        "so the new parent can be composed with it (GPC needs one normalised action space)")
    p.add_argument("--resume", action="store_true", help="continue from <output>/checkpoint")
    p.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                   help="stop with a checkpoint after STEP of the --steps run (same LR schedule; --resume continues)")
    p.add_argument("--evaluate", action="store_true",
                   help="afterwards, sample held-out chunks through the GPC core and compare with baselines")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``gpc-ros train``: train one parent policy and write its checkpoint.

    Args:
        argv: The command-line arguments after ``train`` (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 2 for invalid arguments.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.modality and args.policy != "flow":
        print(f"gpc-ros train: --modality applies to --policy flow only (got --policy {args.policy})",
              file=sys.stderr)
        return 2
    if args.parameterization and args.policy != "dp3":
        print(f"gpc-ros train: --parameterization applies to --policy dp3 only (got --policy {args.policy})",
              file=sys.stderr)
        return 2
    if args.synthetic and not (args.dataset / META_FILE).is_file() and not (args.dataset / "meta").is_dir():
        from gpc_ros.policies.synthetic import ReachTaskConfig, make_episode

        task = ReachTaskConfig(image_size=args.synthetic_image_size, num_points=args.synthetic_points)
        rng = np.random.default_rng(args.seed)
        write_episodes(args.dataset, (make_episode(rng, task) for _ in range(args.synthetic)), 1.0 / task.dt_s,
                       info={"source": "gpc_ros.policies.synthetic reach task", "seed": args.seed,
                             "action": "end-effector position target (m, fr3_link0)",
                             "observation.state": "end-effector position (m, fr3_link0)"})
    from gpc_ros.policies.lerobot.format import LeRobotFormatError
    from gpc_ros.policies.lerobot.reader import is_lerobot_dataset
    from gpc_ros.policies.lerobot.training_data import PARENT_KEYS, feature_shapes

    lerobot = is_lerobot_dataset(args.dataset)
    if not lerobot and not (args.dataset / META_FILE).is_file():
        print(f"gpc-ros train: {args.dataset} holds no dataset (neither {META_FILE} nor meta/info.json); record "
              f"demos or pass --synthetic N", file=sys.stderr)
        return 2
    key_map = {}
    for item in args.key:
        parent, sep, feature = item.partition("=")
        if not sep or parent not in PARENT_KEYS or not feature:
            print(f"gpc-ros train: --key takes INPUT=FEATURE with INPUT one of {PARENT_KEYS}; got {item!r}",
                  file=sys.stderr)
            return 2
        key_map[parent] = feature
    try:
        if lerobot:
            keys = feature_shapes(args.dataset, PARENT_KEYS, key_map, args.image_size)
        else:
            keys = json.loads((args.dataset / META_FILE).read_text())["keys"]
        config = policy_config(args.policy, args.size, keys, args.modality, args.parameterization)
        train = TrainConfig(val_fraction=args.val_fraction, dataset_keys=key_map, steps=args.steps,
                            batch_size=args.batch_size, lr=args.lr,
                            val_every=args.val_every, checkpoint_every=args.checkpoint_every, seed=args.seed,
                            num_threads=args.threads, progress=not args.no_progress,
                            action_normalization_from=args.action_normalization_from)
        trainer = Trainer(args.policy, config, args.dataset, args.output, train)
        if args.resume:
            trainer.resume()
    except (LeRobotFormatError, ValueError, KeyError, FileNotFoundError) as exc:
        print(f"gpc-ros train: {exc}", file=sys.stderr)
        return 2
    params = sum(p.numel() for p in trainer.policy.parameters())
    print(f"training {args.policy} ({params / 1e6:.2f} M parameters) on {len(trainer.train_set)} samples "
          f"from {len(trainer.train_set.episodes)} episodes; steps {trainer.step} -> {train.steps}")
    policy = trainer.run(stop_at=args.stop_at)
    last = trainer.history[-1] if trainer.history else {}
    print(f"done: step {trainer.step}, train loss {last.get('train_loss', float('nan')):.5f}, "
          f"val loss {last.get('val_loss', float('nan')):.5f}; policy in {args.output / CHECKPOINT_DIR}")
    if args.evaluate and trainer.val_set is not None:
        from gpc_ros.policies.evaluation import evaluate, mean_chunk

        err = evaluate([policy], [1.0], [trainer.val_set], mean_chunk(trainer.train_set))
        print(f"held-out action RMSE (GPC core sampler, {err.samples} chunks): policy {err.policy_rmse:.4f}, "
              f"mean-chunk baseline {err.mean_chunk_rmse:.4f}, hold-state baseline {err.hold_state_rmse:.4f}; "
              f"ratio to mean baseline {err.ratio_to_mean:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
