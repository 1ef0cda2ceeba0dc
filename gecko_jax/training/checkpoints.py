"""Checkpoints of the train state and the data position (orbax)."""

from __future__ import annotations

import os
import pathlib

from gecko_jax import paths


class Checkpointer:
    """orbax CheckpointManager: train state + data position, keep N, every K steps."""

    def __init__(self, directory: str | os.PathLike, every: int, keep: int):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.every = every
        # orbax writes arrays with tensorstore: local folders and gs:// (not memory://).
        directory = (paths.as_path(directory) if paths.is_remote(directory)
                     else pathlib.Path(directory).absolute())
        self.manager = ocp.CheckpointManager(
            directory,
            # We decide when to save (every K steps and the last); orbax's own interval
            # logic would also save the very first step.
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=1,
                                                 create=True))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_position: dict, force: bool = False) -> bool:
        ocp = self._ocp
        return self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_position)),
            force=force)

    def restore(self, step: int, abstract_state):
        ocp = self._ocp
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        return out.state, out.data

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        """Waits for a save in flight, then closes the manager."""
        self.wait()
        self.manager.close()
