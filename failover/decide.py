"""The pure decision core: one snapshot in, one action and a one-line reason out. No I/O, no clock.

Election rules:

- no leader key: a healthy node tries to acquire it (unless a switchover names another live healthy candidate);
- the leader with a switchover request for someone else (or anyone) releases the key if another healthy member is
  live, and keeps leading otherwise; a request made of an earlier leader (a switchover to "anyone" that this node
  won) is done and is not obeyed again;
- every other node follows the leader key's holder.

Assignment rules (``plan``), applied by the leader only, never while paused:

- cameras are spread evenly over the live healthy members (least cameras first, then most spare capacity, then name);
- sticky: a camera moves only when its owner is gone (member lease expired), restarted (new session), unhealthy,
  over capacity while another member has room, or when a rebalance is asked for;
- a camera moved off an unhealthy member is remembered as *displaced* from it, and goes back there once that member
  is healthy again, when that evens the spread (its current owner runs at least two cameras more);
- per-camera failover: a camera whose source fails from its owner (the owner lists it as ``failing``) moves alone to
  a healthy member that does not list it as failing; a camera failing from every member stays where it is;
- a camera that no assignment names (none yet, or the key was malformed and read as absent) stays on the one live
  healthy member that reports running it, so a lost assignment never starts a camera twice;
- a move between two live nodes is done in two steps: the camera is first unassigned (``moving``), and given to
  its new owner only once the old one no longer reports running it, so no camera ever runs twice;
- a member given more cameras than its capacity (cameras it can run at full rate) runs them all at a lower frame
  rate (full rate x capacity / count) instead of dropping any.

Running rules (what the node itself runs):

- a node runs a camera only under a valid assignment: written with the current leader key's token, for the node's
  current session; under a stale assignment (a new leader has not written yet) it keeps what it runs and starts
  nothing;
- when etcd cannot be read: if a majority of etcd members is confirmed out of any quorum (they answer without a raft
  leader, or refuse connections) nobody can take a camera, so the node keeps its cameras and makes no assignment
  (failsafe); otherwise it keeps them until ``fence_after`` since its last renewal, then stops them all (fenced).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from failover.dcs import Assignment, Cluster, Member, QuorumProbe

FENCE_FRACTION = 0.8


class Action(StrEnum):
    ACQUIRE = "acquire"  # try to create the leader key
    LEAD = "lead"  # write ``assignment`` if given, run ``run``
    RELEASE = "release"  # delete our leader key (switchover)
    FOLLOW = "follow"  # run ``run`` (or keep what runs when None)
    FAILSAFE = "failsafe"  # no quorum anywhere: keep what runs, assign nothing
    WAIT = "wait"  # etcd unreachable, lease may still be valid: keep what runs
    FENCE = "fence"  # etcd unreachable too long: stop everything


@dataclass(frozen=True)
class Snapshot:
    """Everything ``decide`` may look at. ``cluster`` is None when the DCS could not be read."""

    me: str
    cameras: dict[str, float]  # every camera of the store -> its full frame rate
    running: frozenset[str]
    cluster: Cluster | None
    session: int = 0  # create revision of our member key
    healthy: bool = True
    since_renewal: float = 0.0  # seconds since the last renewal (or no-quorum confirmation)
    ttl: float = 2.0
    dcs_error: str = ""
    quorum: QuorumProbe | None = None


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    assignment: Assignment | None = None  # LEAD: the assignment to write (None: the stored one stands)
    run: dict[str, float] | None = None  # cameras to run -> fps; None: keep what runs, start nothing
    token: int = 0  # the token the cameras in ``run`` run under


@dataclass
class Plan:
    assignment: Assignment
    notes: list[str] = field(default_factory=list)


def names(cameras: object) -> str:
    items = sorted(cameras)  # type: ignore[call-overload]
    return ", ".join(items) if items else "no camera"


def decide(snap: Snapshot) -> Decision:
    """Return the one action this node takes now, with its reason."""
    cluster = snap.cluster
    if cluster is None:
        return _unreachable(snap)
    leader = cluster.leader
    if leader is None:
        if not snap.healthy and any(m.healthy for n, m in cluster.members.items() if n != snap.me):
            return Decision(Action.FOLLOW, "no leader, not acquiring: this node is unhealthy and another is healthy")
        if not snap.healthy:  # nobody healthy is alive: an unhealthy leader running the cameras beats none
            return Decision(Action.ACQUIRE, "no leader and no healthy member: acquiring though this node is unhealthy")
        sw = cluster.switchover
        candidate = cluster.members.get(sw.candidate) if sw and sw.candidate else None
        if candidate is not None and candidate.name != snap.me and candidate.healthy:
            return Decision(Action.FOLLOW, f"no leader: leaving leadership to switchover candidate {candidate.name}")
        others = [n for n, m in cluster.members.items() if n != snap.me and m.healthy]
        if sw and sw.candidate is None and sw.leader == snap.me and others:
            return Decision(Action.FOLLOW, f"no leader: this node switched over, leaving leadership to {others[0]}")
        return Decision(Action.ACQUIRE, "no leader: trying to acquire leadership")
    if leader.name == snap.me:
        sw = cluster.switchover
        # A switchover asked of another (earlier) leader is done now that this node leads; the loop clears it.
        if sw is not None and sw.leader in (None, snap.me):
            others = [
                m.name for m in cluster.members.values() if m.name != snap.me and m.healthy and m.mode == "normal"
            ]
            target = sw.candidate
            if target is None and others:
                return Decision(Action.RELEASE, f"switchover requested: releasing leadership to {', '.join(others)}")
            if target is not None and target != snap.me and target in others:
                return Decision(Action.RELEASE, f"switchover requested: releasing leadership to {target}")
        return _lead(snap, cluster, leader.token)
    return _follow(snap, cluster, leader.name, leader.token)


def _unreachable(snap: Snapshot) -> Decision:
    probe = snap.quorum
    if probe is not None and probe.quorum_impossible:
        return Decision(
            Action.FAILSAFE,
            f"no quorum: keeping {names(snap.running)}, making no new assignment ({probe.describe()})",
        )
    fence_after = FENCE_FRACTION * snap.ttl
    detail = f" ({probe.describe()})" if probe is not None else ""
    if snap.since_renewal < fence_after:
        return Decision(
            Action.WAIT,
            f"etcd unreachable: keeping {names(snap.running)} until the fence at {fence_after:.1f}s "
            f"without renewal (now {snap.since_renewal:.1f}s){detail}",
        )
    return Decision(
        Action.FENCE,
        f"etcd unreachable for {snap.since_renewal:.1f}s and quorum loss not confirmed: "
        f"stopping {names(snap.running)}{detail}",
        run={},
    )


def _lead(snap: Snapshot, cluster: Cluster, token: int) -> Decision:
    if cluster.paused:
        current = cluster.assignment
        run = _my_run(current, snap) if current is not None and current.token == token else None
        return Decision(Action.LEAD, f"leader, paused: moving no camera, keeping {names(snap.running)}", run=run)
    plan = plan_assignment(snap.cameras, cluster.members, cluster.assignment, token, rebalance=cluster.rebalance)
    new = plan.assignment
    changed = cluster.assignment is None or cluster.assignment.token != token or not new.same_plan(cluster.assignment)
    mine = _my_run(new, snap)
    if plan.notes:
        reason = "; ".join(plan.notes)
    elif changed:
        reason = f"leader with token {token}: writing the assignment ({_summary(new)})"
    else:
        reason = f"leader with token {token}: no change ({_summary(new)})"
    return Decision(Action.LEAD, reason, assignment=new if changed else None, run=mine, token=token)


def _follow(snap: Snapshot, cluster: Cluster, leader: str, token: int) -> Decision:
    current = cluster.assignment
    if current is None or current.token != token:
        return Decision(
            Action.FOLLOW, f"following {leader}: waiting for its first assignment, keeping {names(snap.running)}"
        )
    if current.sessions.get(snap.me, snap.session) != snap.session:
        return Decision(
            Action.FOLLOW,
            f"following {leader}: the assignment is for an older session of this node, stopping "
            f"{names(snap.running)} until {leader} reassigns",
            run={},
            token=token,
        )
    run = _my_run(current, snap)
    return Decision(Action.FOLLOW, f"following {leader}: running {names(run)}", run=run, token=token)


def _my_run(assignment: Assignment | None, snap: Snapshot) -> dict[str, float]:
    if assignment is None:
        return {}
    return {c: assignment.fps.get(c, snap.cameras.get(c, 0.0)) for c in assignment.cameras_of(snap.me)}


def _summary(a: Assignment) -> str:
    nodes = sorted({n for n in a.cameras.values() if n})
    parts = [f"{names(a.cameras_of(n))} on {n}" for n in nodes]
    if a.moving:
        parts.append(f"{names(a.moving)} moving")
    return "; ".join(parts) or "no camera assigned"


@dataclass
class _Draft:
    """The assignment being planned: each camera's owner (None: stopped, or waiting for ``moving``'s member to stop
    it), cameras in flight (camera -> the member that must stop it first), displaced cameras (camera -> the home
    member they go back to), and the notes that say why."""

    owner: dict[str, str | None] = field(default_factory=dict)
    moving: dict[str, str] = field(default_factory=dict)
    displaced: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def move_from(self, cam: str, node: str, note: str) -> None:
        """``cam`` is stopped on ``node`` before anyone starts it."""
        self.owner[cam] = None
        self.moving[cam] = node
        self.notes.append(note)


def plan_assignment(
    cameras: dict[str, float],
    members: dict[str, Member],
    previous: Assignment | None,
    token: int,
    rebalance: bool = False,
) -> Plan:
    """Compute the next assignment from the previous one (see the module rules). Pure and deterministic."""
    eligible = {n: m for n, m in members.items() if m.healthy}
    prev_sessions = previous.sessions if previous else {}
    # Displaced cameras are remembered while their home member lives and they are not back on it.
    draft = _Draft(
        displaced={c: n for c, n in (previous.displaced if previous else {}).items() if c in cameras and n in members}
    )
    orphans = _carry_over(draft, cameras, members, eligible, previous)
    if orphans and not eligible:
        _orphans_to_the_living(draft, orphans, members, prev_sessions)
    if eligible:
        _place_orphans(draft, orphans, eligible)
    _send_home(draft, eligible)
    _spread(draft, cameras, eligible, rebalance)
    fps = _rates(draft, cameras, members)
    owner, moving = draft.owner, draft.moving
    assigned = {n for n in owner.values() if n}
    sessions = {n: members[n].session for n in sorted(assigned | set(moving.values())) if n in members}
    displaced = {c: n for c, n in draft.displaced.items() if owner.get(c) != n}
    return Plan(
        Assignment(cameras=owner, fps=fps, token=token, sessions=sessions, moving=moving, displaced=displaced),
        draft.notes,
    )


def _gone_reason(
    node: str, members: dict[str, Member], eligible: dict[str, Member], prev_sessions: dict[str, int]
) -> str | None:
    """Why the previous owner ``node`` cannot keep its cameras (None: it can)."""
    m = members.get(node)
    if m is None:
        return "member lease expired"
    if node in prev_sessions and prev_sessions[node] != m.session:
        return "member restarted"
    if node not in eligible:
        return "member unhealthy"
    return None


def _carry_over(
    draft: _Draft,
    cameras: dict[str, float],
    members: dict[str, Member],
    eligible: dict[str, Member],
    previous: Assignment | None,
) -> list[tuple[str, str]]:
    """Each camera where the previous assignment (and what the members run) leaves it; the orphans, with why."""
    prev_cams = previous.cameras if previous else {}
    prev_sessions = previous.sessions if previous else {}
    prev_moving = dict(previous.moving) if previous else {}
    owner = draft.owner
    orphans: list[tuple[str, str]] = []  # (camera, why)
    for cam in sorted(cameras):
        node = prev_cams.get(cam)
        if node is None and cam in prev_moving:
            src = prev_moving[cam]
            m = members.get(src)
            if m is not None and prev_sessions.get(src, m.session) == m.session and cam in m.running:
                draft.move_from(cam, src, f"moving {cam} from {src}: waiting for {src} to stop it")
            else:
                orphans.append((cam, f"{src} stopped it"))
            continue
        if node is None:
            if not _claimed_by_runners(draft, cam, members, eligible, previous):
                orphans.append((cam, "unassigned"))
            continue
        why = _gone_reason(node, members, eligible, prev_sessions)
        if why is None and cam in members[node].failing and _works_elsewhere(cam, node, eligible):
            # its source fails from this node only: it moves alone, stopped there first
            draft.move_from(
                cam, node, f"moving {cam} from {node}: its source fails from {node}, waiting for {node} to stop it"
            )
        elif why is None:
            owner[cam] = node
        elif why == "member unhealthy" and eligible:
            # live but unhealthy: it must stop the camera before anyone else starts it
            draft.move_from(cam, node, f"moving {cam} from {node}: member unhealthy, waiting for {node} to stop it")
            draft.displaced[cam] = node
        elif why == "member unhealthy":
            owner[cam] = node
        else:
            orphans.append((cam, f"from {node}: {why}"))
    return orphans


def _claimed_by_runners(
    draft: _Draft, cam: str, members: dict[str, Member], eligible: dict[str, Member], previous: Assignment | None
) -> bool:
    """A camera no assignment gives: True when a live member runs it (it stays there, or is stopped first)."""
    # Every live member that says it runs it, healthy or not: none may be started elsewhere before it stops.
    runs = sorted(n for n, m in members.items() if cam in m.running)
    if len(runs) == 1 and runs[0] in eligible and (previous is None or cam not in previous.cameras):
        draft.owner[cam] = runs[0]  # the assignment lost it (a malformed key read as absent): it stays where it runs
        draft.notes.append(f"keeping {cam} on {runs[0]}: it runs it and no assignment names it")
        return True
    if not runs:
        return False
    draft.owner[cam] = None  # runs where no assignment gives it (an unhealthy member, two members): stopped first
    if len(runs) == 1:
        draft.moving[cam] = runs[0]
        if runs[0] not in eligible and eligible:
            draft.displaced[cam] = runs[0]
    draft.notes.append(f"{cam} runs on {', '.join(runs)} though no assignment gives it: waiting for it to stop")
    return True


def _orphans_to_the_living(
    draft: _Draft, orphans: list[tuple[str, str]], members: dict[str, Member], prev_sessions: dict[str, int]
) -> None:
    """Nobody healthy is alive: the live members (unhealthy) run the orphans rather than nobody; a member that turns
    healthy later takes them over, stopped here first (the "member unhealthy" rule)."""
    live = {n: m for n, m in members.items() if n not in prev_sessions or prev_sessions[n] == m.session}
    for cam, why in orphans:
        pool = {n: m for n, m in live.items() if cam not in m.failing} or live
        draft.owner[cam] = _least_loaded(draft.owner, pool) if pool else None
        if draft.owner[cam] is not None:
            draft.notes.append(f"no healthy member: {cam} ({why}) to {draft.owner[cam]}, unhealthy but alive")
    if not live:
        draft.notes.append(f"no member to run {names(c for c, _ in orphans)}")


def _place_orphans(draft: _Draft, orphans: list[tuple[str, str]], eligible: dict[str, Member]) -> None:
    """Each orphan to its home member (a displaced camera) or the least loaded healthy one its source works from."""
    for cam, why in orphans:
        home = draft.displaced.get(cam)
        if home is not None and home in eligible and cam not in eligible[home].failing:
            target = home
        else:
            pool = {n: m for n, m in eligible.items() if cam not in m.failing} or eligible
            target = _least_loaded(draft.owner, pool)
        draft.owner[cam] = target
        if why == "unassigned":
            draft.notes.append(f"assigning {cam} to {target}")
        elif why.endswith("stopped it"):
            draft.notes.append(f"moved {cam} to {target}: {why}")
        else:
            draft.notes.append(f"reassigning {cam} {why} to {target}")


def _send_home(draft: _Draft, eligible: dict[str, Member]) -> None:
    """Displaced cameras go home, one move at a time, while that evens the spread."""
    for cam, home in sorted(draft.displaced.items()):
        src = draft.owner.get(cam)
        if src is None:
            continue
        if src == home or src not in eligible or home not in eligible or cam in eligible[home].failing:
            continue
        counts = _counts(draft.owner, eligible)
        if counts[src] - counts[home] < 2 or any(draft.moving.get(c) == src for c in draft.displaced):
            continue
        draft.move_from(cam, src, f"moving {cam} back to {home}: {home} is healthy again, waiting for {src} to stop it")


def _spread(draft: _Draft, cameras: dict[str, float], eligible: dict[str, Member], rebalance: bool) -> None:
    """Moves between live members: over capacity while another has room, or an asked-for even spread."""
    owner = draft.owner
    for _ in range(len(cameras)):
        counts = _counts(owner, eligible)
        for _cam in draft.moving:  # a camera in flight will land on the least loaded member: count it there already
            if counts:
                counts[min(counts, key=lambda n: (counts[n], n))] += 1
        if len(counts) < 2:
            break
        src = max(counts, key=lambda n: (counts[n] - eligible[n].capacity, counts[n], n))
        dst = min(counts, key=lambda n: (counts[n] - eligible[n].capacity, counts[n], n))
        over = counts[src] > eligible[src].capacity and counts[dst] < eligible[dst].capacity
        uneven = rebalance and max(counts.values()) - min(counts.values()) > 1
        if not (over or uneven):
            break
        if uneven and not over:
            src = max(counts, key=lambda n: (counts[n], n))
            dst = min(counts, key=lambda n: (counts[n], n))
        candidates = [c for c, n in owner.items() if n == src]
        if not candidates:
            break
        why = "rebalance asked for" if uneven and not over else f"{src} over capacity"
        draft.move_from(
            max(candidates),
            src,
            f"moving {max(candidates)} from {src} to make room on {dst}: {why}, waiting for {src} to stop it",
        )


def _rates(draft: _Draft, cameras: dict[str, float], members: dict[str, Member]) -> dict[str, float]:
    """Each assigned camera's frame rate: full, or scaled down evenly on a member over its capacity."""
    fps: dict[str, float] = {}
    for node, member in members.items():  # an unhealthy member keeping cameras (nobody healthy) gets its rates too
        mine = sorted(c for c, n in draft.owner.items() if n == node)
        scale = min(1.0, member.capacity / len(mine)) if mine else 1.0
        if mine and scale < 1.0:
            draft.notes.append(
                f"{node} runs {len(mine)} cameras with capacity {member.capacity}: "
                f"{names(mine)} at {math.floor(scale * 100)}% of full rate"
            )
        for cam in mine:
            fps[cam] = round(cameras[cam] * scale, 3)
    return fps


def _works_elsewhere(cam: str, node: str, eligible: dict[str, Member]) -> bool:
    """True when a healthy member other than ``node`` does not list ``cam`` as failing at its source."""
    return any(n != node and cam not in m.failing for n, m in eligible.items())


def _counts(owner: dict[str, str | None], eligible: dict[str, Member]) -> dict[str, int]:
    counts = dict.fromkeys(eligible, 0)
    for node in owner.values():
        if node in counts:
            counts[node] += 1
    return counts


def _least_loaded(owner: dict[str, str | None], eligible: dict[str, Member]) -> str:
    counts = _counts(owner, eligible)
    return min(eligible, key=lambda n: (counts[n], -(eligible[n].capacity - counts[n]), n))


def given_elsewhere(cluster: Cluster | None, me: str, camera_id: str) -> bool:
    """The test-only ``fence`` break (:mod:`cluster.unsafe`): True when ``cluster`` (the node's last read of etcd;
    None: none yet) holds a current assignment, one written under the leader key's token, that gives ``camera_id`` to
    a node other than ``me`` or moves it off ``me`` (the first step of a move to another node). Only then does the
    runner stop the camera under that break."""
    if cluster is None or cluster.leader is None or cluster.assignment is None:
        return False
    assignment = cluster.assignment
    if assignment.token != cluster.leader.token:
        return False
    owner = assignment.cameras.get(camera_id)
    return (owner is not None and owner != me) or assignment.moving.get(camera_id) == me
