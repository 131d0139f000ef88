"""ACLs with digest authentication."""

import pytest
from kazoo.exceptions import NoAuthError
from kazoo.security import OPEN_ACL_UNSAFE, make_digest_acl, make_digest_acl_credential

from conftest import DIGEST_PASSWORD, DIGEST_USER


def test_digest_acl_requires_auth(make_client, root):
    creds = f"{DIGEST_USER}:{DIGEST_PASSWORD}"
    owner = make_client(auth_data=[("digest", creds)])
    acl = make_digest_acl(DIGEST_USER, DIGEST_PASSWORD, all=True)
    path = owner.create(f"{root}/secure", b"secret", acl=[acl])

    acls, stat = owner.get_acls(path)
    assert len(acls) == 1
    assert acls[0].id.scheme == "digest"
    assert acls[0].id.id == make_digest_acl_credential(DIGEST_USER, DIGEST_PASSWORD)
    assert acls[0].perms == 31
    assert owner.get(path)[0] == b"secret"

    anonymous = make_client()
    anonymous.sync(path)  # another client's write: visible to this one after a sync
    with pytest.raises(NoAuthError):
        anonymous.get(path)
    with pytest.raises(NoAuthError):
        anonymous.set(path, b"x")
    with pytest.raises(NoAuthError):
        anonymous.get_children(path)
    with pytest.raises(NoAuthError):
        anonymous.create(f"{path}/child")
    assert anonymous.exists(path) is not None  # exists needs no permission

    wrong = make_client(auth_data=[("digest", f"{DIGEST_USER}:wrong")])
    wrong.sync(path)
    with pytest.raises(NoAuthError):
        wrong.get(path)

    late = make_client()
    late.add_auth("digest", creds)
    late.sync(path)
    assert late.get(path)[0] == b"secret"


def test_read_only_acl_and_acl_version(zk, root):
    path = zk.create(f"{root}/ro", b"data")
    read_only = make_digest_acl("nobody", "x", read=True)
    world_read = [type(read_only)(perms=1, id=OPEN_ACL_UNSAFE[0].id)]
    stat = zk.set_acls(path, world_read)
    assert stat.aversion == 1
    assert zk.get(path)[0] == b"data"
    with pytest.raises(NoAuthError):
        zk.set(path, b"new")
    acls, _ = zk.get_acls(path)
    assert [(a.perms, a.id.scheme, a.id.id) for a in acls] == [(1, "world", "anyone")]
    # deleting needs DELETE on the parent, not on the node
    zk.delete(path)
