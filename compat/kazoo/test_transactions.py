"""Multi-op transactions: all ops apply together, or none do and each op reports why."""

from kazoo.exceptions import (
    BadVersionError,
    NodeExistsError,
    RolledBackError,
    RuntimeInconsistency,
)


def test_transaction_success_returns_per_op_results(zk, root):
    zk.create(f"{root}/existing", b"v0")
    tx = zk.transaction()
    tx.create(f"{root}/new", b"fresh")
    tx.set_data(f"{root}/existing", b"v1", version=0)
    tx.check(f"{root}/existing", 1)
    tx.create(f"{root}/seq-", sequence=True)
    tx.delete(f"{root}/new")
    results = tx.commit()
    assert results[0] == f"{root}/new"
    assert results[1].version == 1
    assert results[2] is True
    assert results[3].startswith(f"{root}/seq-")
    assert results[4] is True
    assert zk.get(f"{root}/existing")[0] == b"v1"
    assert zk.exists(f"{root}/new") is None


def test_transaction_failure_is_atomic(zk, root):
    zk.create(f"{root}/a", b"v0")
    tx = zk.transaction()
    tx.create(f"{root}/would-be-created")
    tx.set_data(f"{root}/a", b"changed")
    tx.check(f"{root}/a", 42)  # fails: the version is 1 after the set_data above
    tx.delete(f"{root}/a")
    results = tx.commit()
    assert isinstance(results[0], RolledBackError)
    assert isinstance(results[1], RolledBackError)
    assert isinstance(results[2], BadVersionError)
    assert isinstance(results[3], RuntimeInconsistency)
    # nothing applied
    assert zk.exists(f"{root}/would-be-created") is None
    data, stat = zk.get(f"{root}/a")
    assert data == b"v0" and stat.version == 0


def test_transaction_node_exists_failure(zk, root):
    zk.create(f"{root}/taken")
    tx = zk.transaction()
    tx.create(f"{root}/first")
    tx.create(f"{root}/taken")
    results = tx.commit()
    assert isinstance(results[0], RolledBackError)
    assert isinstance(results[1], NodeExistsError)
    assert zk.exists(f"{root}/first") is None


def test_transaction_sees_its_own_earlier_ops(zk, root):
    tx = zk.transaction()
    tx.create(f"{root}/p")
    tx.create(f"{root}/p/c", b"x")
    tx.set_data(f"{root}/p/c", b"y", version=0)
    tx.check(f"{root}/p/c", 1)
    results = tx.commit()
    assert results[:2] == [f"{root}/p", f"{root}/p/c"]
    assert zk.get(f"{root}/p/c")[0] == b"y"
