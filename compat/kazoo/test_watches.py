"""Watches: one-shot events, DataWatch / ChildrenWatch recipes, and ordering."""

import threading

from kazoo.protocol.states import EventType

from conftest import wait_until


def test_data_watch_sees_every_change_in_order(make_client, root):
    watcher = make_client()
    writer = make_client()
    path = f"{root}/watched"
    seen = []
    lock = threading.Lock()

    @watcher.DataWatch(path)
    def on_change(data, stat, event):
        with lock:
            seen.append((data, stat.version if stat else None, event.type if event else None))

    # First call is immediate: the node does not exist yet.
    wait_until(lambda: len(seen) >= 1, message="initial DataWatch call")
    assert seen[0] == (None, None, None)

    writer.create(path, b"v0")
    wait_until(lambda: len(seen) >= 2, message="created event")
    for i in range(1, 6):
        writer.set(path, f"v{i}".encode())
        wait_until(lambda: len(seen) >= 2 + i, message=f"change {i}")
    writer.delete(path)
    wait_until(lambda: len(seen) >= 8, message="deleted event")

    assert seen[1] == (b"v0", 0, EventType.CREATED)
    assert seen[2:7] == [(f"v{i}".encode(), i, EventType.CHANGED) for i in range(1, 6)]
    assert seen[7] == (None, None, EventType.DELETED)


def test_children_watch_sees_membership_changes(make_client, root):
    watcher = make_client()
    writer = make_client()
    seen = []

    @watcher.ChildrenWatch(root)
    def on_children(children):
        seen.append(sorted(children))

    wait_until(lambda: seen, message="initial ChildrenWatch call")
    assert seen[0] == []
    expected = [[]]
    for name in ("a", "b", "c"):
        writer.create(f"{root}/{name}")
        expected.append(sorted(expected[-1] + [name]))
        wait_until(lambda: len(seen) == len(expected), message=f"child {name}")
    writer.delete(f"{root}/b")
    expected.append(["a", "c"])
    wait_until(lambda: len(seen) == len(expected), message="child removal")
    assert seen == expected


def test_one_shot_watches_fire_once_with_the_right_type(make_client, root):
    watcher = make_client()
    writer = make_client()
    path = f"{root}/n"
    events = []
    fired = threading.Event()

    def record(event):
        events.append((event.type, event.path))
        fired.set()

    assert watcher.exists(path, watch=record) is None
    writer.create(path, b"x")
    assert fired.wait(10), "NodeCreated not delivered"
    fired.clear()

    watcher.get(path, watch=record)
    watcher.get_children(root, watch=record)
    writer.set(path, b"y")
    writer.set(path, b"z")  # the data watch was one-shot: no second CHANGED
    writer.create(f"{root}/sibling")
    wait_until(lambda: len(events) >= 3, message="changed + child events")
    writer.delete(f"{root}/sibling")
    # A marker proves the delivery pipe is drained: a fresh watch we trigger last.
    marker = threading.Event()
    watcher.exists(f"{root}/marker", watch=lambda e: marker.set())
    writer.create(f"{root}/marker")
    assert marker.wait(10)
    assert events == [
        (EventType.CREATED, path),
        (EventType.CHANGED, path),
        (EventType.CHILD, root),
    ]
