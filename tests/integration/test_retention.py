"""Event retention (--feature-retention-ms), black-box: a server ingests a history with
wall-clock timestamps, is restarted on the same --feature-dir (the purge runs at start-up, then
every minute), and must have deleted exactly the events older than the cutoff except each
entity's newest one, while the velocity features at the present time stay exactly the offline
ones (tools/fraud/features.py over the whole, unpurged history), secs_since_last included.
Also: the flag's bounds, and L1 turned off (--feature-l1-bytes 0) still serving features.
"""

import subprocess
import sys
import time

import numpy as np

from conftest import ROOT, _server_binary, build_repo, forget, keep_alive_checked, restart_checked
from test_features import VIEW, Client, bits, identity_model, lookups, metric

sys.path.insert(0, str(ROOT / "tools" / "fraud"))
import features as offline  # noqa: E402

DAY = 86_400_000
HOUR = 3_600_000


def history(now):
    """Events (in stream order) and the number the purge must delete at a 24 h retention."""
    def ev(ts, user, card, merchant, amount):
        return {"ts": ts, "user_id": user, "card_id": card, "merchant_id": merchant,
                "amount": amount}
    evs = [
        ev(now - 3 * DAY, "ra", "ca", "m1", 10.0),        # purged (user and card)
        ev(now - 3 * DAY + 5, "rb", "cb", "m1", 1.25),    # purged (user and card)
        ev(now - 5 * DAY // 2, "ra", "ca", "m2", 20.0),   # purged (user and card)
        ev(now - 2 * DAY, "ra", "ca", "m3", 30.0),        # ra's and ca's anchor: kept
        ev(now - 2 * DAY + 7, "rb", "cb", "m2", 2.5),     # rb's and cb's anchor: kept
        ev(now - 2 * DAY + 9, "rc", "cc", "m4", 99.0),    # rc's only event: its own anchor
        ev(now - HOUR, "ra", "ca2", "m1", 40.0),          # recent
        ev(now - 60_000 + 1, "ra", "ca2", "m5", 50.0),    # recent (in the 1 min window)
    ]
    return evs, 6


def offline_row(evs, t, user, card, amount):
    st = offline.OnlineFeatures()
    for e in evs:
        st.add(e)
    return np.array(st.row_values(t, user, card, amount), np.float32)


def test_retention_purges_old_events_keeping_each_entitys_newest(server_factory, tmp_path):
    repo = build_repo(tmp_path / "repo", {"fv": {"model": identity_model(17),
                                                  "config": {"feature_view": VIEW}}})
    store = tmp_path / "store"
    args = ["--feature-dir", str(store), "--feature-sync", "none",
            "--feature-retention-ms", str(DAY)]
    now = int(time.time() * 1000)
    evs, want_purged = history(now)
    t = now + 1000  # a transaction just after the history
    cases = [("ra", "ca", 5.0), ("rb", "cb", 6.0), ("rc", "cc", 7.0), ("ra", "ca2", 8.0),
             ("new", "cnew", 9.0)]
    s = keep_alive_checked(server_factory(repo, args, name="retention"))
    try:
        cl = Client(s)
        # an empty store: the purge at start-up found nothing
        assert metric(cl.metrics(), "onnxd_feature_l2_purged_total") == 0
        assert cl.events(evs)[0] == 200

        def check():
            for user, card, amount in cases:
                status, doc, got, _ = cl.score("fv", {"user_id": user, "card_id": card, "ts": t,
                                                     "return_features": True}, amount)
                assert status == 200, doc
                want = offline_row(evs, t, user, card, amount)
                assert np.array_equal(bits(got), bits(want)), (user, card, got, want)

        check()
        cl.close()
        restart_checked(s)  # the purge runs at start-up
        cl = Client(s)
        deadline = time.monotonic() + 10
        while (metric(cl.metrics(), "onnxd_feature_l2_purged_total") < want_purged
               and time.monotonic() < deadline):
            time.sleep(0.05)
        assert metric(cl.metrics(), "onnxd_feature_l2_purged_total") == want_purged
        check()  # the same features from the purged store, read from L2
        assert lookups(cl, "l2", "hit") == 7  # ra ca rb cb rc cc ca2; ra again from L1
        # the Bloom filter (rebuilt from the entity index, which the purge leaves alone) still
        # knows every entity
        assert metric(cl.metrics(), 'onnxd_feature_bloom_checks_total{result="negative"}') == 2
        cl.close()
        # a second restart: nothing more to delete
        restart_checked(s)
        cl = Client(s)
        time.sleep(0.3)
        assert metric(cl.metrics(), "onnxd_feature_l2_purged_total") == 0
        check()
        cl.close()
    finally:
        forget(s)
        err = s.stop()
        assert err is None, f"{err}\n{s.log_tail()}"


def test_l1_off_serves_velocity_from_l2(server_factory, tmp_path):
    repo = build_repo(tmp_path / "repo", {"fv": {"model": identity_model(17),
                                                  "config": {"feature_view": VIEW}}})
    args = ["--feature-dir", str(tmp_path / "store"), "--feature-sync", "none",
            "--feature-l1-bytes", "0"]
    now = int(time.time() * 1000)
    evs, _ = history(now)
    s = keep_alive_checked(server_factory(repo, args, name="l1-off"))
    try:
        cl = Client(s)
        assert cl.events(evs)[0] == 200
        for _ in range(2):
            params = {"user_id": "ra", "card_id": "ca", "ts": now + 1000, "return_features": True}
            got = cl.score("fv", params, 5.0)[2]
            assert np.array_equal(bits(got), bits(offline_row(evs, now + 1000, "ra", "ca", 5.0)))
        m = cl.metrics()
        assert metric(m, 'onnxd_feature_lookups_total{tier="l2",result="hit"}') == 4
        assert metric(m, 'onnxd_feature_lookups_total{tier="l1",result="hit"}') == 0
        assert metric(m, 'onnxd_feature_lookups_total{tier="l1",result="miss"}') == 0
        assert metric(m, "onnxd_feature_l1_entries") == 0
        cl.close()
    finally:
        forget(s)
        err = s.stop()
        assert err is None, f"{err}\n{s.log_tail()}"


def test_feature_flag_bounds():
    for flag, value, fragment in (("--feature-retention-ms", "3600000", "at least 86400000"),
                                  ("--feature-l1-bytes", "4096", "0 (off) or at least"),
                                  ("--feature-l3-cache-ms", "-1", "feature-l3-cache-ms")):
        r = subprocess.run([str(_server_binary()), flag, value], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 2 and fragment in r.stderr, (flag, r.returncode, r.stderr)
