"""Applying one decision of ``failover.decide`` (:mod:`failover.loop`), in this order:

1. log its reason: at INFO when the action or the reason differs from the last decision's, else at DEBUG (a steady
   state says its sentence once);
2. set the node's mode: ``failsafe``, ``fenced`` or ``unreachable`` (the decision to wait) after those actions,
   ``normal`` after any other;
3. act on the leader key (:mod:`failover.leadership`): release it for a switchover (and nothing else this tick),
   lead (write the assignment; refused: stops only, nothing started), or stop being leader when following;
4. bring the runner to the decided cameras (:mod:`failover.reconcile`): every camera stopped when fenced.

A ``DCSError`` in step 3 starts nothing this tick: the cameras not in the decision are still stopped.
"""

from __future__ import annotations

import logging

from cluster.errors import DCSError
from failover.dcs import Cluster
from failover.decide import Action, Decision
from failover.leadership import Leadership
from failover.reconcile import Reconciler

log = logging.getLogger("failover.loop")  # the lines the loop wrote before the split keep its name

MODES = {Action.FAILSAFE: "failsafe", Action.FENCE: "fenced", Action.WAIT: "unreachable"}


class Applier:
    """Applies decisions (module rules); ``mode`` and ``last`` are the node's mode and the last decision logged."""

    def __init__(self, name: str, leadership: Leadership, reconciler: Reconciler) -> None:
        self.name = name
        self.leadership = leadership
        self.reconciler = reconciler
        self.mode = "starting"
        self.last: Decision | None = None

    def apply(self, decision: Decision, cluster: Cluster | None) -> None:
        self.log(decision)
        act = decision.action
        self.mode = MODES.get(act, "normal")
        try:
            if act is Action.RELEASE and cluster is not None and cluster.leader is not None:
                self.leadership.release(cluster.leader)
                return
            if act is Action.LEAD and cluster is not None and cluster.leader is not None:
                if not self.leadership.lead(cluster, cluster.leader, decision.assignment):
                    self.reconciler.reconcile(decision.run or {}, decision.token, starts=False)
                    return
            elif act is Action.FOLLOW:
                self.leadership.leader = None
        except DCSError as exc:
            log.warning("%s: applying %s failed: %s; starting nothing this tick", self.name, act, exc)
            if decision.run is not None:
                self.reconciler.reconcile(decision.run, decision.token, starts=False)
            return
        if act is Action.FENCE:
            self.reconciler.stop_all()
        elif decision.run is not None:
            self.reconciler.reconcile(decision.run, decision.token, starts=True)

    def log(self, decision: Decision) -> None:
        """Log the decision's reason (INFO when it changed, else DEBUG) and remember it as the last."""
        last = self.last
        level = logging.INFO if last is None or (last.action, last.reason) != (decision.action, decision.reason) else 0
        if level:
            log.log(level, "%s: %s", self.name, decision.reason)
        else:
            log.debug("%s: %s", self.name, decision.reason)
        self.last = decision
