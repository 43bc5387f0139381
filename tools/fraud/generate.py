#!/usr/bin/env python3
"""generate.py: a synthetic, labelled card-transaction stream for the fraud-scoring example.

    python tools/fraud/generate.py [--events 200000] [--seed 7] [--days 4] [--out stream.jsonl]

Writes JSON lines (to stdout without --out), one event a line, in stream order:

    {"ts": 1700000012345, "user_id": "u12", "card_id": "c17", "merchant_id": "m3", "amount": 23.50, "label": 0}

ts is milliseconds since the epoch and never decreases along the stream (equal ts happen);
amount has exactly two decimals; label is 1 for the events of a fraud pattern, 0 otherwise.
The same arguments give the same bytes (numpy PCG64, fixed seed; no clock, no hashing).

The world (sizes scale with --events, so a small stream has the same density as a big one):
  users      events / 50 (4,000 for 200k events), each with an activity level (log-normal),
             a usual spend (log-normal, median ~$35) and 5-25 favourite merchants;
  cards      1 to 3 a user (1.35 on average), the first one used ~80% of the time;
  merchants  3/4 of the users (3,000), Zipf-like popularity and a price level each;
  time       --days days from 2023-11-14 22:13:20 UTC, with a day/night cycle.

Legitimate traffic (98% of events by default) is not all "quiet": 2% of purchases come with a
quick follow-up at the same or a favourite merchant (5 s - 3 min later), 1% are big purchases
(3-10x the usual spend), and a few users have a legitimate "spree" (4-8 merchants they never
used, in 1-3 hours, normal amounts). These are what keep the patterns below from being trivial.

Fraud (label 1, about --fraud-rate of the events, 2% by default), in episodes on a victim
chosen uniformly among users (so quiet users with little history are hit as often as busy ones);
the victim's user_id stays on the events, as it would on a stolen card. Episodes come at a
steady rate and in a steady mix (25% / 40% / 20% / 15% of episodes, in the order below; by
events about 35% / 10% / 20% / 35%), so that a 5k-event test stream is still representative:
  velocity_burst   4-12 transactions on one card within a minute, at random merchants, at
                   1-3x the victim's usual spend;
  amount_outlier   1-2 transactions at 8-30x the victim's usual spend (at least $250) at
                   merchants the victim never used, minutes apart;
  new_merchants    account takeover: 4-9 transactions at distinct merchants the victim never
                   used, over 5-40 minutes, at 1-4x the usual spend;
  card_testing     6-20 tiny amounts ($0.50-$2.99) on one card at distinct merchants within
                   1-5 minutes, then in half the cases one cash-out at 5-15x the usual spend.
Each episode's first event has no velocity signal yet: a model can only flag it from its
amount and the victim's history, which caps the recall any velocity model reaches.

Use as a module: generate(events, seed, ...) returns a Stream (columns as numpy arrays, plus
the pattern of each event, which the JSON lines do not carry); Stream.events() gives the dicts,
write_jsonl / read_jsonl go to and from the file format.
"""

import argparse
import json
import sys
from dataclasses import dataclass

import numpy as np

START_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z
DAY_MS = 86_400_000
PATTERNS = ("legit", "velocity_burst", "amount_outlier", "new_merchants", "card_testing")
PATTERN_MIX = (0.25, 0.40, 0.20, 0.15)  # fraud episodes: velocity, outlier, new merchants, testing


@dataclass
class Stream:
    """A stream in stream order. Entity columns hold integer indices; ids are "u%d", "c%d", "m%d"."""

    ts: np.ndarray        # int64 ms, non-decreasing
    user: np.ndarray      # int64
    card: np.ndarray      # int64
    merchant: np.ndarray  # int64
    cents: np.ndarray     # int64, amount * 100 (exact)
    label: np.ndarray     # int8
    pattern: np.ndarray   # int8, index into PATTERNS (not written to the JSON lines)

    def __len__(self):
        return len(self.ts)

    @property
    def amount(self):
        """float64 amounts, each the double nearest its two-decimal value (as a JSON parser reads it)."""
        return self.cents / 100.0

    def events(self):
        """The events as dicts, exactly as read back from the JSON lines."""
        amount = self.amount
        return [
            {"ts": int(t), "user_id": f"u{u}", "card_id": f"c{c}", "merchant_id": f"m{m}",
             "amount": float(a), "label": int(y)}
            for t, u, c, m, a, y in zip(self.ts, self.user, self.card, self.merchant, amount,
                                        self.label)
        ]

    def lines(self):
        for t, u, c, m, a, y in zip(self.ts.tolist(), self.user.tolist(), self.card.tolist(),
                                    self.merchant.tolist(), self.cents.tolist(),
                                    self.label.tolist()):
            yield (f'{{"ts": {t}, "user_id": "u{u}", "card_id": "c{c}", "merchant_id": "m{m}", '
                   f'"amount": {a // 100}.{a % 100:02d}, "label": {y}}}\n')


def _diurnal_times(rng, n, span_ms):
    """n offsets in [0, span_ms), denser by day (peak 16:00 UTC, trough 04:00 at 1/5 of it)."""
    out = np.empty(0, np.int64)
    while len(out) < n:
        k = max(2 * (n - len(out)), 1024)
        t = rng.integers(0, span_ms, k, dtype=np.int64)
        hour = (t % DAY_MS) / 3_600_000.0
        p = 0.2 + 0.8 * (0.5 - 0.5 * np.cos(2 * np.pi * (hour - 4.0) / 24.0))
        out = np.concatenate([out, t[rng.random(k) < p]])
    return out[:n]


def _diurnal_quantile(q, span_ms):
    """Offsets in [0, span_ms) at quantiles q of the day/night density (inverse CDF on a grid)."""
    step = max(1, min(60_000, span_ms // 1000))
    grid = np.arange(0, span_ms + step, step, dtype=np.float64)
    hour = (grid[:-1] % DAY_MS) / 3_600_000.0
    p = 0.2 + 0.8 * (0.5 - 0.5 * np.cos(2 * np.pi * (hour - 4.0) / 24.0))
    cdf = np.concatenate([[0.0], np.cumsum(p)])
    return np.interp(np.asarray(q) * cdf[-1], cdf, np.minimum(grid, span_ms - 1)).astype(np.int64)


def _to_cents(x):
    return np.maximum(np.rint(np.asarray(x, dtype=np.float64) * 100.0), 1).astype(np.int64)


def generate(events=200_000, seed=7, days=4, fraud_rate=0.02, users=None, merchants=None):
    """The stream as a Stream; see the module docstring for the model of the world."""
    if events < 100:
        raise ValueError("events must be at least 100")
    rng = np.random.default_rng(seed)
    n_users = users or max(20, events // 50)
    n_merch = merchants or max(30, n_users * 3 // 4)
    span = int(days * DAY_MS)

    # ---- the world
    activity = rng.lognormal(0.0, 0.7, n_users)
    activity /= activity.sum()
    usual = rng.lognormal(np.log(35.0), 0.7, n_users)       # usual spend (median), dollars
    spread = rng.uniform(0.3, 0.6, n_users)                  # log-sd of a user's amounts
    n_cards = 1 + (rng.random(n_users) < 0.30) + (rng.random(n_users) < 0.05)
    card_start = np.concatenate([[0], np.cumsum(n_cards)[:-1]])
    popularity = 1.0 / np.arange(1, n_merch + 1) ** 0.9
    popularity = popularity[rng.permutation(n_merch)]
    popularity /= popularity.sum()
    price = rng.lognormal(0.0, 0.4, n_merch)                 # merchant price level
    n_fav = rng.integers(5, 26, n_users)
    fav = [rng.choice(n_merch, size=min(k, n_merch), replace=False, p=popularity) for k in n_fav]
    fav_w = [rng.dirichlet(np.full(len(f), 0.8)) for f in fav]
    fav_set = [set(f.tolist()) for f in fav]

    cols = {k: [] for k in ("ts", "user", "card", "merchant", "amount", "pattern")}

    def emit(ts, user, card, merchant, amount, pattern):
        n = len(ts)
        cols["ts"].append(np.asarray(ts, np.int64))
        cols["user"].append(np.broadcast_to(np.asarray(user, np.int64), n))
        cols["card"].append(np.broadcast_to(np.asarray(card, np.int64), n))
        cols["merchant"].append(np.asarray(merchant, np.int64))
        cols["amount"].append(np.broadcast_to(np.asarray(amount, np.float64), n))
        cols["pattern"].append(np.full(n, pattern, np.int8))
        return n

    def new_merchants(u, k):
        """k distinct merchants user u never uses (by popularity)."""
        out = []
        while len(out) < k:
            for m in rng.choice(n_merch, size=2 * k, p=popularity).tolist():
                if m not in fav_set[u] and m not in out:
                    out.append(m)
                    if len(out) == k:
                        break
        return np.array(out, np.int64)

    def any_card(u):
        return card_start[u] + rng.integers(0, n_cards[u])

    # ---- fraud episodes, until the target count is reached. Start times follow the day/night
    # density at evenly spread quantiles (a golden-ratio sequence from a random start), and the
    # pattern is picked from PATTERN_MIX by a second such sequence (step sqrt(2) - 1): fraud
    # arrives at a steady rate and in a steady mix, so even a small stream has every pattern in
    # its first three quarters and some fraud in its last quarter.
    target = int(round(fraud_rate * events))
    n_fraud = 0
    q, qk = rng.random(), rng.random()
    mix_cdf = np.cumsum(PATTERN_MIX)
    while n_fraud < target:
        qk = (qk + 0.41421356237309515) % 1.0
        kind = 1 + min(int(np.searchsorted(mix_cdf, qk * mix_cdf[-1], side="right")), 3)
        u = int(rng.integers(0, n_users))
        c = any_card(u)
        q = (q + 0.6180339887498949) % 1.0
        t0 = int(_diurnal_quantile(q, span - min(3_600_000, span // 4)))
        if kind == 1:  # velocity burst: within a minute
            k = int(rng.integers(4, 13))
            ts = t0 + np.sort(rng.integers(0, 60_000, k))
            m = rng.choice(n_merch, size=k, p=popularity)
            amt = usual[u] * rng.uniform(1.0, 3.0, k) * price[m]
        elif kind == 2:  # amount outlier
            k = int(rng.integers(1, 3))
            ts = t0 + np.sort(rng.integers(0, 600_000, k))
            m = new_merchants(u, k)
            amt = np.maximum(usual[u] * rng.uniform(8.0, 30.0, k), rng.uniform(250, 400, k))
        elif kind == 3:  # new merchants (account takeover)
            k = int(rng.integers(4, 10))
            ts = t0 + np.sort(rng.integers(0, int(rng.integers(5, 41)) * 60_000, k))
            m = new_merchants(u, k)
            amt = usual[u] * rng.uniform(1.0, 4.0, k) * price[m]
        else:  # card testing, then maybe a cash-out
            k = int(rng.integers(6, 21))
            ts = t0 + np.sort(rng.integers(0, int(rng.integers(1, 6)) * 60_000, k))
            m = rng.choice(n_merch, size=k, replace=False, p=popularity)
            amt = rng.uniform(0.50, 3.00, k)
            if rng.random() < 0.5:
                ts = np.append(ts, ts[-1] + rng.integers(60_000, 600_000))
                m = np.append(m, rng.choice(n_merch, p=popularity))
                amt = np.append(amt, usual[u] * rng.uniform(5.0, 15.0))
        n_fraud += emit(ts, u, c, m, amt, kind)

    # ---- legitimate traffic: base purchases, quick follow-ups, big purchases, sprees
    n_legit = events - n_fraud
    n_spree_events = 0
    spree_budget = int(0.004 * n_legit)
    while n_spree_events < spree_budget:
        u = int(rng.integers(0, n_users))
        k = int(rng.integers(4, 9))
        t0 = int(_diurnal_times(rng, 1, span - min(3 * 3_600_000, span // 4))[0])
        ts = t0 + np.sort(rng.integers(0, int(rng.integers(1, 4)) * 3_600_000, k))
        m = new_merchants(u, k)
        amt = usual[u] * price[m] * rng.lognormal(0.0, spread[u], k)
        c = card_start[u]
        n_spree_events += emit(ts, u, c, m, amt, 0)
    n_base = n_legit - n_spree_events
    n_follow = int(0.02 * n_base)
    n_base -= n_follow
    u = rng.choice(n_users, size=n_base, p=activity)
    ts = _diurnal_times(rng, n_base, span)
    card = card_start[u] + np.where(rng.random(n_base) < 0.8, 0,
                                    rng.integers(0, 1 << 30, n_base) % n_cards[u])
    use_fav = rng.random(n_base) < 0.92
    r = rng.random(n_base)
    merchant = rng.choice(n_merch, size=n_base, p=popularity)
    # inverse-CDF pick among the user's favourites, all users at once: user k's cumulative
    # weights shifted by k, so one sorted array holds every user's CDF in its own [k, k+1)
    fav_flat = np.concatenate(fav)
    fav_end = np.cumsum([len(f) for f in fav])
    cdf = np.concatenate([np.cumsum(w) + k for k, w in enumerate(fav_w)])
    i = np.flatnonzero(use_fav)
    j = np.minimum(np.searchsorted(cdf, u[i] + r[i], side="right"), fav_end[u[i]] - 1)
    merchant[i] = fav_flat[j]
    amt = usual[u] * price[merchant] * rng.lognormal(0.0, spread[u])
    big = rng.random(n_base) < 0.01
    amt[big] *= rng.uniform(3.0, 10.0, int(big.sum()))
    emit(ts, u, card, merchant, amt, 0)
    # follow-ups: the same card shortly after a base purchase, same merchant or a favourite
    src = rng.choice(n_base, size=n_follow, replace=False)
    same = rng.random(n_follow) < 0.6
    fm = np.array([merchant[s] if sm else rng.choice(fav[u[s]]) for s, sm in zip(src, same)],
                  np.int64)
    emit(np.minimum(ts[src] + rng.integers(5_000, 180_000, n_follow), span - 1), u[src],
         card[src], fm, usual[u[src]] * price[fm] * rng.lognormal(0.0, spread[u[src]]) * 0.5, 0)

    # ---- assemble in stream order: by ts, ties in generation order (stable sort)
    ts = np.concatenate(cols["ts"]) + START_MS
    order = np.argsort(ts, kind="stable")
    pattern = np.concatenate(cols["pattern"])[order]
    return Stream(
        ts=ts[order],
        user=np.concatenate(cols["user"])[order],
        card=np.concatenate(cols["card"])[order],
        merchant=np.concatenate(cols["merchant"])[order],
        cents=_to_cents(np.minimum(np.concatenate(cols["amount"]), 25_000.0))[order],
        label=(pattern > 0).astype(np.int8),
        pattern=pattern,
    )


def write_jsonl(stream, path_or_file):
    if hasattr(path_or_file, "write"):
        path_or_file.writelines(stream.lines())
        return
    with open(path_or_file, "w", encoding="ascii") as f:
        f.writelines(stream.lines())


def read_jsonl(path):
    """The events of a JSON-lines file as dicts (any producer, not only this script)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000, help="number of events (default 200000)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--days", type=float, default=4.0, help="time span (default 4 days)")
    ap.add_argument("--fraud-rate", type=float, default=0.02, help="share of fraud events")
    ap.add_argument("--out", help="output file (default stdout)")
    args = ap.parse_args(argv)
    s = generate(args.events, args.seed, args.days, args.fraud_rate)
    write_jsonl(s, args.out or sys.stdout)
    counts = np.bincount(s.pattern, minlength=len(PATTERNS))
    print(f"generate: {len(s)} events, {int(s.label.sum())} fraud "
          f"({100.0 * s.label.mean():.2f}%): "
          + ", ".join(f"{p} {n}" for p, n in zip(PATTERNS, counts.tolist())), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
