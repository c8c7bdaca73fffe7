"""Mid-optimization checkpoints of long packed groups, so a pre-empted group resumes where it stopped.

A group whose padded length reaches ``checkpoint_min_frames`` saves its stacked optimizer states
every ``checkpoint_every`` epochs with orbax under ``<out>/_checkpoints/<group_id>/``, next to
``group.json`` (members, padded length, slots, settings key, epochs done). A later run with the same
settings resumes the group with the same members, the same per-epoch keys and so the same result;
the folder is removed once every member's completion record exists.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import shutil
from typing import Any, Mapping, Sequence

import jax

from neuface_jax.common.atomic import atomic_write_text


def settings_key(setup) -> str:
    """A short hash of what decides a fit's result (optimizer, encoder, model, landmarks): a
    checkpoint is resumed only under the same key."""
    doc = {
        "fit": {k: repr(v) for k, v in dataclasses.asdict(setup.fit_config).items()},
        "encoder": setup.encoder_label,
        "encoder_config": setup.encoder_config.to_dict(),
        "model": setup.face_setup.model_label,
        "landmark_set": setup.face_setup.landmark_set,
        "contour": setup.face_setup.contour,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


class GroupCheckpoint:
    """Orbax checkpoint of one packed group's stacked optimizer states (``parallel.PackedCheckpoint``).

    ``<root>/<group_id>/`` holds the orbax steps (one kept) and ``group.json`` (``meta`` plus the
    epochs done). The states are saved as a flat ``{index: array}`` dict of the pytree's leaves and
    restored into the caller's template (same tree, same sharding).
    """

    def __init__(self, root: pathlib.Path, group_id: str, meta: Mapping[str, Any], every: int):
        self.dir = pathlib.Path(root) / group_id
        self.group_id = group_id
        self.meta = dict(meta)
        self.every = int(every)
        self.saves = 0
        self._manager = None

    @staticmethod
    def group_id(clip_ids: Sequence[str], settings: str) -> str:
        h = hashlib.sha256(("\n".join(clip_ids) + "\n" + settings).encode()).hexdigest()
        return h[:20]

    def _mgr(self):
        # orbax is imported only when a long group checkpoints (most runs never do).
        import orbax.checkpoint as ocp

        if self._manager is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._manager = ocp.CheckpointManager(
                self.dir / "state", options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
            )
        return self._manager

    @staticmethod
    def _flat(states) -> dict[str, Any]:
        return {f"{i:05d}": leaf for i, leaf in enumerate(jax.tree.leaves(states))}

    def save(self, epochs_done: int, states) -> None:
        import orbax.checkpoint as ocp  # see _mgr

        mgr = self._mgr()
        mgr.save(int(epochs_done), args=ocp.args.StandardSave(self._flat(states)))
        mgr.wait_until_finished()
        atomic_write_text(self.dir / "group.json", json.dumps({**self.meta, "epochs_done": int(epochs_done)}, indent=1))
        self.saves += 1

    def restore(self, template):
        import orbax.checkpoint as ocp  # see _mgr

        if not (self.dir / "group.json").is_file():
            return None
        mgr = self._mgr()
        step = mgr.latest_step()
        if step is None:
            return None
        flat = mgr.restore(step, args=ocp.args.StandardRestore(self._flat(template)))
        leaves = [flat[f"{i:05d}"] for i in range(len(flat))]
        return int(step), jax.tree.unflatten(jax.tree.structure(template), leaves)

    def close(self, delete: bool = False) -> None:
        if self._manager is not None:
            self._manager.close()
            self._manager = None
        if delete:
            shutil.rmtree(self.dir, ignore_errors=True)


def pending_checkpoints(root: pathlib.Path) -> list[dict[str, Any]]:
    """The ``group.json`` of every group checkpoint under ``root`` (with its ``group_id``)."""
    out = []
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        try:
            meta = json.loads((d / "group.json").read_text())
        except (OSError, ValueError):
            continue
        meta["group_id"] = d.name
        out.append(meta)
    return out


def remove(root: pathlib.Path, group_id: str) -> None:
    """Deletes a group's checkpoint (finished, or no longer applicable)."""
    shutil.rmtree(pathlib.Path(root) / group_id, ignore_errors=True)
