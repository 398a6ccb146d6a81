"""Making the runner run what a decision says (:mod:`failover.loop`): the runner side of applying a decision.

- The cameras running here and not in the decision are stopped first (in name order), then every camera of the
  decision is started (in name order) at its fps under the decision's token: a camera already running is started
  again, which the runner takes as a retoken (or a no-op).
- ``starts=False`` (the assignment was refused, or the DCS failed while applying): stops only, nothing is started.
- One camera that cannot start (not in this node's config, a broken source) leaves the others: the failure is logged
  once per reason (``start_errors`` remembers the last reason of each camera until it starts), and a
  ``RuntimeError`` naming every camera that failed is raised once the others were started.
"""

from __future__ import annotations

import logging

from failover.fence import Fenced

log = logging.getLogger("failover.loop")  # the lines the loop wrote before the split keep its name


class Reconciler:
    """Brings ``runner`` to a decided set of cameras: :meth:`reconcile`, :meth:`stop_all`."""

    def __init__(self, runner: Fenced, node: str) -> None:
        self.runner = runner
        self.node = node
        self.start_errors: dict[str, str] = {}  # camera -> why its last start failed (logged once per reason)

    def reconcile(self, run: dict[str, float], token: int, starts: bool) -> None:
        for cam in sorted(self.runner.running() - set(run)):
            log.info("%s: stopping %s", self.node, cam)
            self.runner.stop_camera(cam)
        if not starts:
            return
        running = self.runner.running()
        failed: list[str] = []
        for cam, fps in sorted(run.items()):
            if cam not in running:
                log.info("%s: starting %s at %.2f fps under token %d", self.node, cam, fps, token)
            try:  # one camera that cannot start (not in this node's config, a broken source) leaves the others
                self.runner.start_camera(cam, fps, token)
            except Exception as exc:
                failed.append(cam)
                if self.start_errors.get(cam) != str(exc):
                    log.error("%s: cannot start %s: %s", self.node, cam, exc)
                self.start_errors[cam] = str(exc)
        for cam in list(self.start_errors):
            if cam not in failed:
                del self.start_errors[cam]
        if failed:
            raise RuntimeError(f"{self.node}: cannot start {', '.join(failed)} (the other cameras were started)")

    def stop_all(self) -> list[str]:
        """Stop every camera running here; returns their names, sorted."""
        stopped = sorted(self.runner.running())
        for cam in stopped:
            self.runner.stop_camera(cam)
        return stopped
