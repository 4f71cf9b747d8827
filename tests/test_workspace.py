"""pymk.workspace: one scratch object per thread and key, rebuilt when the size changes."""

import threading

import numpy as np

from pymk.workspace import thread_scratch


def test_same_object_until_size_changes():
    a = thread_scratch("t_same", 5, lambda n: np.zeros(n))
    a[0] = 7.0
    assert thread_scratch("t_same", 5, lambda n: np.zeros(n)) is a
    b = thread_scratch("t_same", 6, lambda n: np.zeros(n))
    assert b is not a and b.shape == (6,) and b[0] == 0.0


def test_keys_do_not_share():
    a = thread_scratch("t_key_a", 4, lambda n: np.zeros(n))
    b = thread_scratch("t_key_b", 4, lambda n: np.zeros(n))
    assert a is not b


def test_each_thread_gets_its_own():
    mine = thread_scratch("t_thread", 3, lambda n: np.zeros(n))
    seen = []

    def other():
        seen.append(thread_scratch("t_thread", 3, lambda n: np.zeros(n)))
        seen.append(thread_scratch("t_thread", 3, lambda n: np.zeros(n)))

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen[0] is seen[1] and seen[0] is not mine


def test_a_thread_that_ends_leaves_its_scratch_to_the_next():
    """A new thread takes the scratch an ended thread used (clean, as kernels leave it) instead of building
    one; scratch of another size is not handed out."""
    made = []

    def make(n):
        made.append(n)
        return np.zeros(n)

    seen = []

    def worker(n):
        seen.append(thread_scratch("t_spare", n, make))

    for n in (8, 8, 9, 9):
        t = threading.Thread(target=worker, args=(n,))
        t.start()
        t.join()  # the thread's locals are gone once join returns
    assert seen[1] is seen[0] and seen[3] is seen[2] and seen[2] is not seen[0]
    assert made == [8, 9]


def test_threads_alive_together_never_share():
    """Scratch is handed over only when a thread ends: threads running side by side each get their own, even
    when spares are there to take."""
    for _ in range(4):  # four ended threads leave four spares
        t = threading.Thread(target=lambda: thread_scratch("t_side", 5, lambda n: np.zeros(n)))
        t.start()
        t.join()
    barrier = threading.Barrier(4)
    seen = []

    def worker():
        seen.append(thread_scratch("t_side", 5, lambda n: np.zeros(n)))
        barrier.wait()  # all four hold theirs at once

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(x) for x in seen}) == 4


def test_spares_are_kept_for_the_two_sizes_asked_last():
    """While a swap serves two graphs both sizes keep their spares; a third size drops the least recent."""
    def run(n):
        out = []
        t = threading.Thread(target=lambda: out.append(thread_scratch("t_grow", n, lambda m: np.zeros(m))))
        t.start()
        t.join()
        return out[0]

    a, b = run(10), run(11)
    assert a.shape == (10,) and b.shape == (11,)
    assert run(10) is a and run(11) is b  # both sizes served side by side
    c = run(12)  # a third size: 10, asked least recently, loses its spare
    assert c.shape == (12,) and run(11) is b and run(12) is c
    assert run(10) is not a
