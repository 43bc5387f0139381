#!/usr/bin/env python3
"""features.py: the velocity features of the fraud model, offline, exactly as the server computes
them online.

    python tools/fraud/features.py EVENTS.jsonl [--out FEATURES.npy] [--jsonl]

reads events (JSON lines with ts, user_id, card_id, merchant_id, amount) and writes the model
input row of each event: a float32 [N, 17] .npy with --out, or one JSON array a line with
--jsonl (each value printed with 9 significant digits, which round-trips float32), the golden
data to hold an online implementation against.

Definition (authoritative; the C side in src/features/ must match it bit for bit)
-------------------------------------------------------------------------------------
Events are processed in stream order; ts must not decrease along the stream (a decreasing ts is
an error here: both "previous" and the window bounds assume it). For event i at t = ts_i, the
features of an entity E (E is the event's user_id, then its card_id) are computed from E's
PREVIOUS events j (j < i in stream order, so ts_j <= t), BEFORE event i is added to E:

  for W in 60 s, 3600 s, 86400 s (60000, 3600000, 86400000 ms):
    cnt_W   = number of previous events of E with ts_j > t - W  (an event exactly W old is out)
    amt_W   = sum of their amounts: start from 0.0 and add each amount (a float64, the double
              nearest the decimal text) in stream order, oldest first, in float64; then cast
              the sum to float32 (round to nearest even). NOT a running sum that subtracts
              evicted amounts: that rounds differently.
  distinct_merchants_24h = number of distinct merchant_id among the previous events of E with
              ts_j > t - 86400000
  secs_since_last = (t - ts_last) / 1000.0, where ts_last is the ts of E's most recent previous
              event: the integer difference in ms, converted to float64, divided by 1000.0 in
              float64, then cast to float32; -1.0 if E has no previous event (ts_last = t, as
              happens with equal ts, gives 0.0)

  per entity, in this order: cnt_1m, cnt_1h, cnt_24h, amt_1m, amt_1h, amt_24h,
                             distinct_merchants_24h, secs_since_last

  model input row "features" (17 float32): amount (the event's float64 amount cast to float32),
  the 8 user features, the 8 card features. Counts are exact in float32 (below 2^24).

An entity's previous events are all its events ever ingested; nothing else expires. The event
being scored is not among them (scoring a transaction does not add it; adding it is separate).
For amounts with two decimals below 10^8, float32(float64(amount)) equals the float32 nearest
the decimal itself (checked exhaustively), so parsing "123.45" straight into an FP32 tensor
gives the same first feature.

What an online implementation must also get right for online == offline (not arithmetic):
  - secs_since_last looks at the entity's most recent event EVER, not only the last 24 h: a
    store that expires old events must still know each entity's last ts, or the value turns
    into -1 for entities quiet for longer than the retention.
  - merchant_id is compared as a string. An integer id or a hash in its place is equal only up
    to collisions, and must be the same across restarts (not a per-process seeded hash), or
    stored events stop matching new ones.
  - an ingested event must be visible to the next score (a write queue that answers before the
    event is stored, or drops it when full, makes the online features lag or diverge).

Implementations here
  OnlineFeatures   per-entity deques of the last 24 h (ts, amount, merchant) plus a merchant
                   multiset: row(event) gives the 17 features, add(event) ingests; what a
                   server does, one event at a time. compute() runs it over a whole stream.
  compute_reference  the slow literal reading (every previous event of the entity scanned for
                   every event), for the tests to hold the fast one against.
"""

import argparse
import json
import sys
from collections import deque

import numpy as np

WINDOWS_MS = (60_000, 3_600_000, 86_400_000)
W_1M, W_1H, W_24H = WINDOWS_MS
ENTITY_FEATURES = ("cnt_1m", "cnt_1h", "cnt_24h", "amt_1m", "amt_1h", "amt_24h",
                   "distinct_merchants_24h", "secs_since_last")
FEATURE_NAMES = (("amount",) + tuple("user_" + f for f in ENTITY_FEATURES)
                 + tuple("card_" + f for f in ENTITY_FEATURES))
N_FEATURES = len(FEATURE_NAMES)  # 17


class EntityState:
    """One user's or card's recent events: the last 24 h, oldest first."""

    __slots__ = ("recent", "merchants", "last_ts")

    def __init__(self):
        self.recent = deque()   # (ts, amount, merchant_id), ts > (latest t) - 24 h
        self.merchants = {}     # merchant_id -> count among `recent`
        self.last_ts = None     # ts of the most recent event ever added

    def _expire(self, t):
        """Drops events with ts <= t - 24 h; t never decreases, so they never count again."""
        recent, merchants, horizon = self.recent, self.merchants, t - W_24H
        while recent and recent[0][0] <= horizon:
            _, _, m = recent.popleft()
            n = merchants[m] - 1
            if n:
                merchants[m] = n
            else:
                del merchants[m]

    def features(self, t):
        """The 8 features at time t (float64/int values; the caller casts to float32)."""
        self._expire(t)
        h_1m, h_1h = t - W_1M, t - W_1H
        c_1m = c_1h = 0
        s_1m = s_1h = s_24h = 0.0
        for ts, amount, _ in self.recent:  # oldest first: each sum adds in stream order
            s_24h += amount
            if ts > h_1h:
                s_1h += amount
                c_1h += 1
                if ts > h_1m:
                    s_1m += amount
                    c_1m += 1
        secs = -1.0 if self.last_ts is None else (t - self.last_ts) / 1000.0
        return (c_1m, c_1h, len(self.recent), s_1m, s_1h, s_24h, len(self.merchants), secs)

    def add(self, t, amount, merchant):
        self._expire(t)
        self.recent.append((t, amount, merchant))
        self.merchants[merchant] = self.merchants.get(merchant, 0) + 1
        self.last_ts = t


class OnlineFeatures:
    """Streaming state for all users and cards: row() before add(), event by event."""

    def __init__(self):
        self.users = {}
        self.cards = {}
        self.last_ts = None

    def _check_ts(self, t):
        if self.last_ts is not None and t < self.last_ts:
            raise ValueError(f"ts {t} is before the previous event's ts {self.last_ts}")

    def row_values(self, ts, user_id, card_id, amount):
        """The 17 features of a transaction as Python numbers (not yet float32)."""
        t = int(ts)
        self._check_ts(t)
        empty = EntityState()
        u = self.users.get(user_id, empty).features(t)
        c = self.cards.get(card_id, empty).features(t)
        return (float(amount),) + u + c

    def row(self, event):
        """The model input row (float32 [17]) of event, which is not added."""
        return np.array(self.row_values(event["ts"], event["user_id"], event["card_id"],
                                        event["amount"]), dtype=np.float32)

    def add(self, event):
        t = int(event["ts"])
        self._check_ts(t)
        self.last_ts = t
        amount, merchant = float(event["amount"]), event["merchant_id"]
        for table, key in ((self.users, event["user_id"]), (self.cards, event["card_id"])):
            state = table.get(key)
            if state is None:
                state = table[key] = EntityState()
            state.add(t, amount, merchant)


def _columns(events):
    """(ts, user_ids, card_ids, merchant_ids, amounts) from dicts or from a generate.Stream."""
    if hasattr(events, "cents"):  # generate.Stream: integer ids are as good as strings
        return (events.ts.tolist(), events.user.tolist(), events.card.tolist(),
                events.merchant.tolist(), events.amount.tolist())
    return ([int(e["ts"]) for e in events], [e["user_id"] for e in events],
            [e["card_id"] for e in events], [e["merchant_id"] for e in events],
            [float(e["amount"]) for e in events])


def compute(events):
    """float32 [N, 17]: each event's row, with the events before it in the state (fast path)."""
    ts, users, cards, merchants, amounts = _columns(events)
    out = np.empty((len(ts), N_FEATURES), dtype=np.float64)
    ustates, cstates = {}, {}
    prev_t = None
    for i, (t, u, c, m, a) in enumerate(zip(ts, users, cards, merchants, amounts)):
        if prev_t is not None and t < prev_t:
            raise ValueError(f"event {i}: ts {t} is before the previous event's ts {prev_t}")
        prev_t = t
        us = ustates.get(u)
        if us is None:
            us = ustates[u] = EntityState()
        cs = cstates.get(c)
        if cs is None:
            cs = cstates[c] = EntityState()
        out[i] = (a,) + us.features(t) + cs.features(t)
        us.add(t, a, m)
        cs.add(t, a, m)
    # float64 -> float32 rounds each value once, to nearest even: the same cast as the C side's.
    # Every float64 here is the exact value the definition computes in float64.
    return out.astype(np.float32)


def compute_reference(events):
    """The definition read literally: for every event, every previous event of the entity."""
    ts, users, cards, merchants, amounts = _columns(events)
    history = {}  # ("user"|"card", key) -> list of previous event indices, in stream order
    rows = []

    def entity_features(key, t):
        prev = history.get(key, [])
        feats_cnt, feats_amt = [], []
        for w in WINDOWS_MS:
            in_w = [j for j in prev if t - w < ts[j] <= t]
            total = 0.0
            for j in in_w:
                total = total + amounts[j]
            feats_cnt.append(float(len(in_w)))
            feats_amt.append(np.float32(total))
        distinct = len({merchants[j] for j in prev if t - W_24H < ts[j] <= t})
        secs = -1.0 if not prev else (t - ts[prev[-1]]) / 1000.0
        return feats_cnt + feats_amt + [float(distinct), np.float32(secs)]

    for i in range(len(ts)):
        if i and ts[i] < ts[i - 1]:
            raise ValueError(f"event {i}: ts decreases")
        t = ts[i]
        row = ([np.float32(amounts[i])] + entity_features(("user", users[i]), t)
               + entity_features(("card", cards[i]), t))
        rows.append(np.array([np.float32(v) for v in row], dtype=np.float32))
        history.setdefault(("user", users[i]), []).append(i)
        history.setdefault(("card", cards[i]), []).append(i)
    return np.stack(rows) if rows else np.empty((0, N_FEATURES), np.float32)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("events", help="JSON-lines events file")
    ap.add_argument("--out", help="write a float32 [N,17] .npy here")
    ap.add_argument("--jsonl", action="store_true", help="print one JSON array of 17 a line")
    ap.add_argument("--reference", action="store_true", help="use the slow literal implementation")
    args = ap.parse_args(argv)
    with open(args.events, encoding="utf-8") as f:
        events = [json.loads(line) for line in f if line.strip()]
    x = (compute_reference if args.reference else compute)(events)
    if args.out:
        np.save(args.out, x)
    if args.jsonl or not args.out:
        w = sys.stdout.write
        for row in x.tolist():
            w("[" + ", ".join(f"{v:.9g}" for v in row) + "]\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
