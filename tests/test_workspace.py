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
