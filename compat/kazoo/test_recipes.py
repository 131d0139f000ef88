"""kazoo's recipes, each driven by several clients (separate sessions) as applications use them."""

import threading
import time

import pytest

from conftest import wait_until


def run_threads(targets, timeout=30):
    """Starts one thread per callable, joins them with a deadline, re-raises the first error."""
    errors = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # surfaced in the test thread below
                errors.append(exc)
        return run

    threads = [threading.Thread(target=wrap(t), daemon=True) for t in targets]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "threads still running after the deadline"
    if errors:
        raise errors[0]


def test_lock_mutual_exclusion_between_two_clients(make_client, root):
    clients = [make_client(), make_client()]
    path = f"{root}/lock"
    state = {"inside": 0, "max_inside": 0, "count": 0}
    guard = threading.Lock()
    rounds = 15

    def worker(client, name):
        def run():
            lock = client.Lock(path, name)
            for _ in range(rounds):
                with lock:
                    with guard:
                        state["inside"] += 1
                        state["max_inside"] = max(state["max_inside"], state["inside"])
                    # a read-modify-write on the server that would lose updates if two held it
                    value = int(client.get(f"{root}/counter")[0])
                    client.set(f"{root}/counter", str(value + 1).encode())
                    with guard:
                        state["inside"] -= 1
                        state["count"] += 1
        return run

    clients[0].create(f"{root}/counter", b"0")
    run_threads([worker(clients[0], "one"), worker(clients[1], "two")])
    assert state["max_inside"] == 1
    assert state["count"] == 2 * rounds
    assert clients[0].get(f"{root}/counter")[0] == str(2 * rounds).encode()


def test_lock_is_held_until_released_and_lists_contenders(make_client, root):
    first, second = make_client(), make_client()
    path = f"{root}/lock"
    lock1 = first.Lock(path, "first")
    lock2 = second.Lock(path, "second")
    assert lock1.acquire(timeout=10)
    assert lock2.acquire(blocking=False) is False
    acquired = threading.Event()

    def contend():
        if lock2.acquire(timeout=20):
            acquired.set()

    t = threading.Thread(target=contend, daemon=True)
    t.start()
    wait_until(lambda: lock1.contenders() == ["first", "second"], message="two contenders")
    assert not acquired.is_set()
    lock1.release()
    assert acquired.wait(10), "second client did not get the lock after release"
    t.join(5)
    assert lock2.contenders() == ["second"]
    lock2.release()


def test_lock_released_when_holder_session_closes(make_client, root):
    holder, waiter = make_client(), make_client()
    path = f"{root}/lock"
    assert holder.Lock(path, "holder").acquire(timeout=10)
    lock = waiter.Lock(path, "waiter")
    assert lock.acquire(blocking=False) is False
    holder.stop()
    assert lock.acquire(timeout=10)
    lock.release()


def test_election_one_leader_and_succession(make_client, root):
    path = f"{root}/election"
    clients = [make_client() for _ in range(3)]
    leaders = []
    release = {name: threading.Event() for name in ("c0", "c1", "c2")}
    elections = {f"c{i}": c.Election(path, f"c{i}") for i, c in enumerate(clients)}

    def lead(name):
        leaders.append(name)
        release[name].wait(30)

    def contend(election, name):
        try:
            election.run(lead, name)
        except Exception:
            if name != leaders[1]:  # only the leader whose client we stop may fail to release
                raise

    threads = []
    for name, election in elections.items():
        t = threading.Thread(target=contend, args=(election, name), daemon=True)
        t.start()
        threads.append(t)

    wait_until(lambda: len(leaders) == 1, message="a first leader")
    wait_until(lambda: len(elections["c0"].contenders()) == 3, message="three contenders")
    first = leaders[0]
    assert elections["c0"].contenders()[0] == first
    release[first].set()  # the leader steps down
    wait_until(lambda: len(leaders) == 2, message="a second leader")
    second = leaders[1]
    assert second != first
    assert len(leaders) == 2  # never two at once: the third still waits
    # the next leader can also lose leadership by its session closing
    clients[int(second[1])].stop()
    wait_until(lambda: len(leaders) == 3, message="a third leader")
    assert set(leaders) == {"c0", "c1", "c2"}
    for e in release.values():
        e.set()
    for t in threads:
        t.join(10)


def test_counter_concurrent_increments(make_client, root):
    clients = [make_client(), make_client(), make_client()]
    path = f"{root}/counter"

    def bump(client):
        def run():
            counter = client.Counter(path)
            for _ in range(10):
                counter += 1
        return run

    run_threads([bump(c) for c in clients])
    assert clients[0].Counter(path).value == 30
    counter = clients[1].Counter(path)
    counter -= 5
    assert counter.value == 25


def test_locking_queue_hands_each_item_to_one_consumer(make_client, root):
    producer, c1, c2 = make_client(), make_client(), make_client()
    path = f"{root}/queue"
    q = producer.LockingQueue(path)
    q.put(b"low", priority=200)
    q.put(b"first", priority=10)
    q.put(b"second", priority=10)
    assert len(q) == 3

    # Consumers may sit on other members than the producer and each other: each syncs before it
    # relies on another client's write (ZooKeeper's cross-client guarantee; without it this raced
    # on multi-member ensembles).
    q1, q2 = c1.LockingQueue(path), c2.LockingQueue(path)
    c1.sync(path)
    assert q1.get(timeout=10) == b"first"  # lower priority value first, then FIFO
    c2.sync(path)
    assert q2.get(timeout=10) == b"second"  # "first" is locked by c1
    assert q1.holds_lock() and q2.holds_lock()
    assert q1.release()  # give it back unconsumed
    assert q2.consume()
    c2.sync(path)
    assert q2.get(timeout=10) == b"first"
    assert q2.consume()
    c1.sync(path)
    assert q1.get(timeout=10) == b"low"
    assert q1.consume()
    producer.sync(path)
    assert len(q) == 0
    assert q1.get(timeout=0.2) is None  # empty queue: times out with None


def test_barrier_blocks_until_removed(make_client, root):
    owner, waiter = make_client(), make_client()
    path = f"{root}/barrier"
    owner.Barrier(path).create()
    barrier = waiter.Barrier(path)
    waiter.sync(path)  # the owner's create, maybe through another member
    assert barrier.wait(timeout=0.3) is False
    passed = threading.Event()
    t = threading.Thread(target=lambda: barrier.wait(timeout=20) and passed.set(), daemon=True)
    t.start()
    owner.Barrier(path).remove()
    assert passed.wait(10), "waiter not released after the barrier was removed"
    t.join(5)


def test_double_barrier_enters_and_leaves_together(make_client, root):
    path = f"{root}/double"
    n = 3
    clients = [make_client() for _ in range(n)]
    arrived = []
    entered_with = []
    left = []
    guard = threading.Lock()

    def member(i, client):
        def run():
            barrier = client.DoubleBarrier(path, n, identifier=f"m{i}")
            with guard:
                arrived.append(i)
            barrier.enter()
            with guard:
                entered_with.append(len(arrived))
            barrier.leave()
            with guard:
                left.append(i)
        return run

    run_threads([member(i, c) for i, c in enumerate(clients)])
    assert entered_with == [n] * n  # nobody got in before all had arrived
    assert sorted(left) == list(range(n))


def test_semaphore_limits_lease_holders(make_client, root):
    path = f"{root}/sem"
    a, b, c = make_client(), make_client(), make_client()
    sem_a = a.Semaphore(path, "a", max_leases=2)
    sem_b = b.Semaphore(path, "b", max_leases=2)
    sem_c = c.Semaphore(path, "c", max_leases=2)
    assert sem_a.acquire(timeout=10)
    assert sem_b.acquire(timeout=10)
    assert sem_c.acquire(blocking=False) is False
    assert sorted(sem_c.lease_holders()) == ["a", "b"]
    sem_a.release()
    assert sem_c.acquire(timeout=10)
    assert sorted(sem_c.lease_holders()) == ["b", "c"]
    sem_b.release()
    sem_c.release()
    assert sem_c.lease_holders() == []


@pytest.mark.parametrize("kind", ["Party", "ShallowParty"])
def test_party_membership(make_client, root, kind):
    path = f"{root}/party"
    a, b, observer = make_client(), make_client(), make_client()
    pa = getattr(a, kind)(path, "alpha")
    pb = getattr(b, kind)(path, "beta")
    view = getattr(observer, kind)(path)
    # The observer is another client, maybe on another member: ZooKeeper promises it sees the
    # others' writes only after a sync (without one this raced on any multi-member ensemble).
    pa.join()
    pb.join()
    observer.sync(path)
    assert len(view) == 2
    assert sorted(view) == ["alpha", "beta"]
    pa.leave()
    observer.sync(path)
    assert list(view) == ["beta"]
    b.stop()  # members are ephemeral: a closed session leaves the party
    observer.sync(path)
    assert len(view) == 0
