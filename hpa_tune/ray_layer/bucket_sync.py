"""Ray Tune callback that keeps a bucket experiment's own files on the bucket while it runs.

Ray Tune writes trials and its experiment snapshots straight to the bucket; our files
(``run.json``, ``space.yaml``, the Optuna journal, ASHA's rungs, TensorBoard) are written to the
driver's staging copy (``staging``). If they reached the bucket only when the command ends, a
driver that dies (SIGKILL, its machine gone) would leave a snapshot that ``hpa-tune resume``
cannot use. So each time Tune snapshots the experiment, the files changed since the last
upload are uploaded first: Tune asks its callbacks for their state while writing the snapshot
(``get_state``) and uploads the snapshot after that, so the bucket never holds a Ray snapshot
newer than our files.
"""

from __future__ import annotations

import logging
from typing import Any

from ray.tune import Callback

from hpa_tune.errors import HpaTuneError
from hpa_tune.storage.staging import Snapshot, staging_dir, upload_changed

log = logging.getLogger(__name__)


class StagingUploads(Callback):
    """Uploads what changed in the staging copy of ``location`` before each Tune snapshot."""

    def __init__(self, location: str) -> None:
        self.location = location
        self._uploaded: Snapshot = {}

    def __getstate__(self) -> dict[str, Any]:
        # Restored by a resumed driver with a staging copy of its own: compare from scratch.
        return {**self.__dict__, "_uploaded": {}}

    def sync(self) -> None:
        """Upload the files changed since the last call (a failed upload is retried next time
        and at the end of the command; the search goes on)."""
        try:
            self._uploaded = upload_changed(
                staging_dir(self.location), self.location, self._uploaded
            )
        except (HpaTuneError, OSError) as err:
            log.warning("could not upload the experiment's files to %s: %s", self.location, err)

    def get_state(self) -> dict | None:
        self.sync()
        return None  # nothing of ours in Tune's snapshot
