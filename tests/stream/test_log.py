import logging
import multiprocessing as mp
import time

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from pymk.stream.log import EdgeEvent, EventLogError, FileEventLog, RedisEventLog


def _writer(path, start, count):
    log = FileEventLog(path)
    for i in range(start, start + count):
        log.append(i, i + 1_000_000, 1.0)


def test_file_log_reads_from_positions_and_waits_for_whole_lines(tmp_path):
    log = FileEventLog(tmp_path / "s" / "events.log")
    assert log.read() == ([], "0")
    log.append(1, 2, 10.0)
    p2 = log.append(3, 4, 11.0)
    events, pos = log.read()
    assert events == [EdgeEvent(1, 2, 10.0), EdgeEvent(3, 4, 11.0)] and pos == p2
    with open(log.path, "ab") as f:
        f.write(b"5,6,12.0")  # a writer mid-line: not an event yet
    assert log.read(pos) == ([], pos)
    with open(log.path, "ab") as f:
        f.write(b"\n")
    assert log.read(pos)[0] == [EdgeEvent(5, 6, 12.0)]
    first, p1 = log.read(count=1)
    assert first == [EdgeEvent(1, 2, 10.0)] and log.read(p1, count=1)[0] == [EdgeEvent(3, 4, 11.0)]
    t = time.monotonic()
    _, end = log.read()
    assert log.read(end, block_ms=100) == ([], end) and time.monotonic() - t >= 0.09
    with pytest.raises(EventLogError, match="self-loop"):
        log.append(7, 7)
    with pytest.raises(EventLogError, match="integer user ids"):
        log.append("x", 7)


def test_file_log_skips_a_corrupt_line_naming_it_and_keeps_the_rest(tmp_path, caplog):
    path = tmp_path / "events.log"
    path.write_bytes(b"1,2,3.0\nnot an event\n4,5,6.0\n")
    log = FileEventLog(path)
    with caplog.at_level(logging.WARNING, "pymk.stream"):
        events, _ = log.read()
    assert events == [EdgeEvent(1, 2, 3.0), EdgeEvent(4, 5, 6.0)]
    assert log.bad == 1 and f"{path} at byte 8" in caplog.text


def test_a_line_cut_by_a_killed_writer_is_skipped_and_loses_no_later_event(tmp_path, caplog):
    """A writer killed mid-line leaves a fragment: `end()` stops before it (readers wait for whole lines), and
    the next log opened on the file ends it, so every event appended afterwards is read whole."""
    path = tmp_path / "events.log"
    log = FileEventLog(path)
    log.append(1, 2, 10.0)
    whole = log.end()
    with open(path, "ab") as f:
        f.write(b"3,4,1")  # the killed writer's fragment
    assert log.end() == whole and log.read(whole) == ([], whole)
    with caplog.at_level(logging.WARNING, "pymk.stream"):
        again = FileEventLog(path)  # a restarted worker
        p = again.append(5, 6, 12.0)
        assert again.append(7, 8, 13.0) == again.end() != p
        events, pos = again.read()
    assert events == [EdgeEvent(1, 2, 10.0), EdgeEvent(5, 6, 12.0), EdgeEvent(7, 8, 13.0)]
    assert pos == again.end() and again.bad == 1 and "ended mid-line" in caplog.text
    assert FileEventLog(path).read()[0] == events  # a third opening adds nothing: the file ends whole
    assert path.read_bytes().count(b" #cut\n") == 1


def test_file_log_end_finds_the_last_whole_line_past_a_long_fragment(tmp_path):
    path = tmp_path / "events.log"
    log = FileEventLog(path)
    whole = log.append(1, 2, 3.0)
    with open(path, "ab") as f:
        f.write(b"9" * 10_000)  # a fragment longer than the page end() reads first
    assert log.end() == whole
    path.write_bytes(b"9" * 10_000)
    assert log.end() is None  # no whole line at all
    log = FileEventLog(path)  # ends the fragment: one unreadable line, then nothing
    assert log.end() == "10006" and log.read() == ([], "10006") and log.bad == 1


def test_file_log_appends_from_several_processes_stay_whole_lines(tmp_path):
    path = tmp_path / "events.log"
    FileEventLog(path)
    procs = [mp.get_context("spawn").Process(target=_writer, args=(path, k * 1000, 500)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    events, _ = FileEventLog(path).read(count=10**6)
    assert sorted(e.src for e in events) == sorted(k * 1000 + i for k in range(3) for i in range(500))
    assert all(e.dst == e.src + 1_000_000 for e in events)


def test_redis_log_on_a_real_server(redis_server):
    client = redis.Redis.from_url(redis_server.url, socket_timeout=2)
    client.delete("t:edges")
    log = RedisEventLog(client, key="t:edges")
    assert log.read() == ([], "0-0")
    log.append(1, 2, 10.0)
    p2 = log.append(3, 4, 11.0)
    events, pos = log.read()
    assert events == [EdgeEvent(1, 2, 10.0), EdgeEvent(3, 4, 11.0)] and pos == p2
    client.xadd("t:edges", {"src": "oops"})  # written by something else: skipped, position moves on
    p4 = log.append(5, 6, 12.0)
    events, pos = log.read(pos)
    assert events == [EdgeEvent(5, 6, 12.0)] and pos == p4 and log.bad == 1
    t = time.monotonic()
    assert log.read(pos, block_ms=150) == ([], pos) and time.monotonic() - t >= 0.1
    # a second reader (another serving worker) sees every event from its own position
    other = RedisEventLog(redis.Redis.from_url(redis_server.url), key="t:edges")
    assert [e.src for e in other.read()[0]] == [1, 3, 5]


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 400), maxlen=st.integers(1, 150), at=st.integers(-1, 399))
def test_a_trimmed_stream_says_when_events_after_a_position_are_gone(redis_server, n, maxlen, at):
    """`RedisEventLog.missing_after` against the events appended and those XRANGE still returns: whenever an
    event after the position is gone it says so (never None), and it is None whenever the position's own
    event is still in the stream or nothing was trimmed (no false alarm for a reader that is in time)."""
    client = redis.Redis.from_url(redis_server.url, socket_timeout=2)
    key = f"t:trim:{n}:{maxlen}:{at}"
    client.delete(key)
    log = RedisEventLog(client, key=key, maxlen=maxlen)
    try:
        added = [log.append(i, i + 1, 1.0) for i in range(n)]
        kept = {eid.decode() for eid, _ in client.xrange(key)}
        pos = added[at] if 0 <= at < n else None
        later = added[at + 1:] if pos is not None else added
        gone_after = any(eid not in kept for eid in later)
        said = log.missing_after(pos)
        if gone_after:
            assert said is not None and key in said
        if len(kept) == n or (pos is not None and pos in kept):
            assert said is None
    finally:
        client.delete(key)
