#!/usr/bin/env bash
# zkCli compatibility suite: drives the stock Apache ZooKeeper CLI (zkCli.sh) against a server and
# checks what it prints. Proven against Apache ZooKeeper; pointed at Roster with the same command.
#
#   usage: test.sh <host:port>
#   env:   ZKCLI (default /usr/share/zookeeper/bin/zkCli.sh), JAVA (default java),
#          ZK_JAR (default /usr/share/java/zookeeper.jar, used for the multi script),
#          ZK_REAP_DEADLINE seconds allowed for TTL/container reaping (default 20)
#
# zkCli reads commands from stdin when it is not a terminal, runs them one after another in one
# session, and exits on `quit`; so each "batch" below is one JVM and one ZooKeeper session.
# Lines `#> NAME` inside a batch become `stat <root>/__mark__/NAME`, whose reply
# "Node does not exist: ..." splits the output into named sections.
set -uo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 <host:port>" >&2
  exit 2
fi
server=$1
here=$(cd "$(dirname "$0")" && pwd)
ZKCLI=${ZKCLI:-/usr/share/zookeeper/bin/zkCli.sh}
JAVA=${JAVA:-java}
ZK_JAR=${ZK_JAR:-/usr/share/java/zookeeper.jar}
reap_deadline=${ZK_REAP_DEADLINE:-20}

R=/zkcli-$$-$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/zkcli-test.XXXXXX")
passed=0
failed=0
watcher_pid=""

cleanup() {
  if [ -n "$watcher_pid" ] && kill -0 "$watcher_pid" 2>/dev/null; then kill "$watcher_pid" 2>/dev/null; fi
  printf 'addauth digest alice:secret\ndeleteall %s\nquit\n' "$R" | timeout 30 "$ZKCLI" -server "$server" > /dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

ok() { passed=$((passed + 1)); echo "ok   - $1"; }
fail() {
  failed=$((failed + 1))
  echo "FAIL - $1"
  if [ -n "${2:-}" ]; then printf '%s\n' "$2" | sed 's/^/       | /'; fi
}

# batch NAME: run the commands on stdin in one zkCli session; output in $work/NAME.out
batch() {
  local name=$1
  { sed -e "s|^#> \(.*\)$|stat $R/__mark__/\1|"; echo quit; } \
    | timeout 60 "$ZKCLI" -server "$server" 2>&1 | grep -v '^SLF4J' > "$work/$name.out"
}

# section NAME MARK: the lines printed between marker MARK and the next marker (or the end),
# without asynchronous WATCHER blocks (those are checked separately).
section() {
  awk -v start="Node does not exist: $R/__mark__/$2" -v any="Node does not exist: $R/__mark__/" '
    $0 == start { on = 1; next }
    on && index($0, any) == 1 { exit }
    on && ($0 == "WATCHER::" || $0 ~ /^WatchedEvent / || $0 == "") { next }
    on { print }' "$work/$1.out"
}

# expect NAME MARK ERE DESC: some line of the section matches ERE (anchor it yourself).
expect() {
  if section "$1" "$2" | grep -Eq -- "$3"; then ok "$4"; else fail "$4" "expected a line matching: $3
got:
$(section "$1" "$2")"; fi
}

# expect_exact NAME MARK TEXT DESC: the section is exactly TEXT.
expect_exact() {
  local got
  got=$(section "$1" "$2")
  if [ "$got" = "$3" ]; then ok "$4"; else fail "$4" "expected:
$3
got:
$got"; fi
}

# stat_field NAME MARK FIELD: value of "FIELD = value" in a section.
stat_field() { section "$1" "$2" | sed -n "s/^$3 = //p" | head -n 1; }

# node_gone PATH: polls (one zkCli session per try) until PATH does not exist or the deadline passes.
node_gone() {
  local path=$1 deadline=$((SECONDS + reap_deadline))
  local out
  while [ $SECONDS -lt $deadline ]; do
    # (zkCli exits non-zero when its last command failed, so capture before grepping)
    out=$(printf 'stat %s\nquit\n' "$path" | timeout 30 "$ZKCLI" -server "$server" 2>&1)
    if grep -qx "Node does not exist: $path" <<< "$out"; then
      return 0
    fi
    sleep 1
  done
  return 1
}

# Fail fast (instead of zkCli retrying for a minute per batch) when nothing listens there.
first=${server%%,*}  # a connect string may list several members; probe the first
if ! timeout 5 bash -c "exec 3<>/dev/tcp/${first%:*}/${first##*:}" 2>/dev/null; then
  echo "FAIL - cannot open a TCP connection to $server"
  echo "0 passed, 1 failed"
  exit 1
fi

digest=$(printf 'alice:secret' | openssl dgst -sha1 -binary | base64)
echo "# zkCli suite against $server, root $R"

# ---------------------------------------------------------------- create / get / set / stat / ls
batch crud <<EOF
create $R
#> create
create $R/a hello
#> create-dup
create $R/a again
#> create-no-parent
create $R/missing/child x
#> get
get $R/a
#> get-s
get -s $R/a
#> set-ok
set -v 0 $R/a world
#> set-bad-version
set -v 0 $R/a nope
#> get-after-set
get $R/a
#> stat
stat $R/a
#> seq
create -s $R/seq- one
create -s $R/seq- two
#> eph
create -e $R/eph temp
stat $R/eph
#> ephemerals
getEphemerals $R
#> eph-child
create $R/eph/child x
#> cont
create -c $R/cont
stat $R/cont
#> ttl
create -t 2000 $R/ttl t
stat $R/ttl
#> ls-s
ls -s $R
#> count
getAllChildrenNumber $R
#> delete-bad-version
delete -v 7 $R/a
#> tree-setup
create $R/tree
create $R/tree/x
create $R/tree/x/y
#> not-empty
delete $R/tree
#> deleteall
deleteall $R/tree
ls $R/tree
#> delete
delete -v 1 $R/a
get $R/a
#> sync
sync $R
#> end
EOF

expect_exact crud create "Created $R/a" "create prints 'Created <path>'"
expect_exact crud create-dup "Node already exists: $R/a" "create of an existing node -> NodeExists"
expect_exact crud create-no-parent "Node does not exist: $R/missing/child" "create under a missing parent -> NoNode"
expect_exact crud get "hello" "get returns the data"
expect crud get-s '^dataLength = 5$' "get -s shows dataLength of the data"
fields=$(section crud get-s | sed -n 's/ = .*//p' | tr '\n' ' ')
if [ "$fields" = "cZxid ctime mZxid mtime pZxid cversion dataVersion aclVersion ephemeralOwner dataLength numChildren " ]; then
  ok "get -s prints the 11 Stat fields in order"
else
  fail "get -s prints the 11 Stat fields in order" "got: $fields"
fi
expect_exact crud set-ok "" "set -v with the current version succeeds silently"
expect_exact crud set-bad-version "version No is not valid : $R/a" "set -v with a stale version -> BadVersion"
expect_exact crud get-after-set "world" "data changed by the successful set only"
expect crud stat '^dataVersion = 1$' "stat: dataVersion counts sets"
czxid=$(stat_field crud stat cZxid)
mzxid=$(stat_field crud stat mZxid)
if [ -n "$czxid" ] && [ -n "$mzxid" ] && [ $((mzxid)) -gt $((czxid)) ]; then
  ok "stat: mZxid ($mzxid) > cZxid ($czxid) after a set"
else
  fail "stat: mZxid > cZxid after a set" "cZxid=$czxid mZxid=$mzxid"
fi
# $R has had one child created (a) before the sequentials: suffix = parent cversion, %010d.
expect_exact crud seq "Created $R/seq-0000000001
Created $R/seq-0000000002" "create -s appends the parent's cversion as a 10-digit suffix"
eph_owner=$(stat_field crud eph ephemeralOwner)
if [[ "$eph_owner" =~ ^0x[0-9a-f]+$ ]] && [ "$eph_owner" != "0x0" ]; then
  ok "create -e: ephemeralOwner is the session id ($eph_owner)"
else
  fail "create -e: ephemeralOwner is the session id" "ephemeralOwner=$eph_owner"
fi
expect_exact crud ephemerals "[$R/eph]" "getEphemerals lists the session's ephemeral"
expect_exact crud eph-child "Ephemerals cannot have children: $R/eph/child" "child of an ephemeral -> NoChildrenForEphemerals"
expect crud cont "^Created $R/cont$" "create -c creates a container"
# The server stores a container/TTL marker in ephemeralOwner but clients are shown 0.
expect crud cont '^ephemeralOwner = 0x0$' "container: ephemeralOwner reported as 0x0"
expect crud ttl "^Created $R/ttl$" "create -t creates a TTL node (extended types enabled)"
expect crud ttl '^ephemeralOwner = 0x0$' "TTL node: ephemeralOwner reported as 0x0"
expect crud ls-s "^\[a, cont, eph, seq-0000000001, seq-0000000002, ttl\]$" "ls -s lists children (sorted by zkCli)"
expect crud ls-s '^numChildren = 6$' "ls -s shows the parent's stat (numChildren)"
expect crud ls-s '^cversion = 6$' "ls -s: parent cversion counts child creations"
expect_exact crud count "6" "getAllChildrenNumber counts descendants"
expect_exact crud delete-bad-version "version No is not valid : $R/a" "delete -v with a stale version -> BadVersion"
expect_exact crud not-empty "Node not empty: $R/tree" "delete of a node with children -> NotEmpty"
expect_exact crud deleteall "Node does not exist: $R/tree" "deleteall removes a whole subtree"
expect_exact crud delete "Node does not exist: $R/a" "delete -v with the current version removes the node"
expect_exact crud sync "Sync is OK" "sync succeeds"

# The ephemeral belonged to the crud session, which `quit` closed: it must be gone at once.
batch after-close <<EOF
#> eph
stat $R/eph
#> end
EOF
expect_exact after-close eph "Node does not exist: $R/eph" "ephemeral removed when its session closes"

# TTL node (2 s, no children) and an emptied container are reaped by the server.
printf 'create %s/cont/kid x\ndelete %s/cont/kid\nquit\n' "$R" "$R" \
  | timeout 30 "$ZKCLI" -server "$server" > /dev/null 2>&1
if node_gone "$R/ttl"; then ok "TTL node is deleted after its TTL expires"; else fail "TTL node is deleted after its TTL expires (within ${reap_deadline}s)"; fi
if node_gone "$R/cont"; then ok "container is deleted once its last child is gone"; else fail "container is deleted once its last child is gone (within ${reap_deadline}s)"; fi

# ---------------------------------------------------------------- ACLs and digest auth
batch acl <<EOF
create $R/ro data
#> getacl-default
getAcl $R/ro
#> setacl
setAcl $R/ro world:anyone:r
#> getacl-r
getAcl $R/ro
#> write-denied
set $R/ro other
#> read-allowed
get -s $R/ro
#> secure
create $R/sec secret digest:alice:$digest:cdrwa
#> secure-noauth
get $R/sec
#> secure-getacl-noauth
getAcl $R/sec
#> whoami
whoami
#> end
EOF
expect_exact acl getacl-default "'world,'anyone
: cdrwa" "getAcl: default ACL is world:anyone:cdrwa"
expect_exact acl setacl "" "setAcl succeeds silently"
expect_exact acl getacl-r "'world,'anyone
: r" "getAcl shows the new ACL"
expect_exact acl write-denied "Insufficient permission : $R/ro" "set without WRITE permission -> NoAuth"
expect acl read-allowed '^data$' "get with READ permission works"
expect acl read-allowed '^aclVersion = 1$' "setAcl bumps aclVersion"
expect_exact acl secure "Created $R/sec" "create with a digest ACL"
expect_exact acl secure-noauth "Insufficient permission : $R/sec" "digest-protected node unreadable without auth"
expect_exact acl secure-getacl-noauth "Insufficient permission : $R/sec" "getAcl needs READ or ADMIN: denied without auth"
expect_exact acl whoami "Auth scheme: User
ip: 127.0.0.1" "whoami without auth shows only the ip identity"

batch auth-good <<EOF
addauth digest alice:secret
#> get
get $R/sec
#> whoami
whoami
#> getacl
getAcl $R/sec
#> auth-acl
create $R/mine m auth::cdrwa
getAcl $R/mine
#> end
EOF
expect_exact auth-good get "secret" "addauth digest with the right password grants access"
expect auth-good whoami '^digest: alice$' "whoami lists the digest identity"
expect_exact auth-good getacl "'digest,'alice:$digest
: cdrwa" "digest ACL stored as user:base64(sha1(user:password))"
expect_exact auth-good auth-acl "Created $R/mine
'digest,'alice:$digest
: cdrwa" "ACL 'auth::cdrwa' is replaced by the caller's digest identity"

batch auth-bad <<EOF
addauth digest alice:wrong
#> get
get $R/sec
#> end
EOF
expect_exact auth-bad get "Insufficient permission : $R/sec" "addauth digest with a wrong password does not grant access"

# ---------------------------------------------------------------- watches seen by another session
# Session A (kept open through a fifo) sets a persistent recursive watch on $R/w and a one-shot data
# watch on $R/wd; session B then makes changes, and A must print the events in order.
printf 'create %s/w\ncreate %s/wd d0\nquit\n' "$R" "$R" | timeout 30 "$ZKCLI" -server "$server" > /dev/null 2>&1
mkfifo "$work/watch.fifo"
timeout 90 "$ZKCLI" -server "$server" < "$work/watch.fifo" 2>&1 | grep --line-buffered -v '^SLF4J' > "$work/watch.out" &
watcher_pid=$!
exec 3> "$work/watch.fifo"
printf 'addWatch -m PERSISTENT_RECURSIVE %s/w\nget -w %s/wd\nstat %s/__mark__/armed\n' "$R" "$R" "$R" >&3
deadline=$((SECONDS + 20))
until grep -qx "Node does not exist: $R/__mark__/armed" "$work/watch.out" || [ $SECONDS -ge $deadline ]; do sleep 0.1; done

batch changes <<EOF
set $R/wd d1
set $R/wd d2
create $R/w/c1 x
create $R/w/c1/g y
set $R/w/c1/g z
delete $R/w/c1/g
EOF

deadline=$((SECONDS + 15))
until grep -Eq "type:NodeDeleted path:$R/w/c1/g( |$)" "$work/watch.out" || [ $SECONDS -ge $deadline ]; do sleep 0.1; done
echo quit >&3
exec 3>&-
wait "$watcher_pid"
watcher_pid=""

events=$(sed -n "s/^WatchedEvent state:SyncConnected type:\([A-Za-z]*\) path:\($(printf '%s' "$R" | sed 's/[.[\*^$/]/\\&/g')[^ ]*\).*/\1 \2/p" "$work/watch.out")
expected_events="NodeDataChanged $R/wd
NodeCreated $R/w/c1
NodeCreated $R/w/c1/g
NodeDataChanged $R/w/c1/g
NodeDeleted $R/w/c1/g"
if [ "$events" = "$expected_events" ]; then
  ok "watches: another session's changes arrive in order as WATCHER events"
else
  fail "watches: another session's changes arrive in order as WATCHER events" "expected:
$expected_events
got:
$events"
fi
if grep -q "type:NodeChildrenChanged" "$work/watch.out"; then
  fail "PERSISTENT_RECURSIVE watch never sends NodeChildrenChanged" "$(grep NodeChildrenChanged "$work/watch.out")"
else
  ok "PERSISTENT_RECURSIVE watch never sends NodeChildrenChanged"
fi
if [ "$(grep -c "type:NodeDataChanged path:$R/wd" "$work/watch.out")" = "1" ]; then
  ok "get -w data watch is one-shot (one event for two sets)"
else
  fail "get -w data watch is one-shot (one event for two sets)" "$(grep "path:$R/wd" "$work/watch.out")"
fi
if grep -Eq "^d0$" "$work/watch.out"; then ok "get -w returns the data while setting the watch"; else fail "get -w returns the data while setting the watch"; fi

# ---------------------------------------------------------------- multi via a script
multi_out=$(cd "$work" && timeout 60 "$JAVA" -cp "$ZK_JAR" "$here/Multi.java" "$server" "$R" 2>&1 | grep -v '^SLF4J')
if grep -qx "ok-results: create:$R/m create:$R/m/a setData:version=1 check" <<< "$multi_out"; then
  ok "multi: create+create+setData+check succeed with per-op results"
else
  fail "multi: create+create+setData+check succeed with per-op results" "$multi_out"
fi
if grep -qx "failed-code: BADVERSION" <<< "$multi_out"; then
  ok "multi: a failing check makes the whole multi fail with BadVersion"
else
  fail "multi: a failing check makes the whole multi fail with BadVersion" "$multi_out"
fi
if grep -qx "failed-results: error:0 error:0 error:-103 error:-2" <<< "$multi_out"; then
  ok "multi: failed per-op results are 0 before, -103 at, -2 after the failing op"
else
  fail "multi: failed per-op results are 0 before, -103 at, -2 after the failing op" "$multi_out"
fi
batch after-multi <<EOF
#> a
get -s $R/m/a
#> never
stat $R/m/never
#> end
EOF
expect after-multi a '^v1$' "multi: committed setData is visible"
expect after-multi a '^dataVersion = 1$' "multi: failed multi changed nothing (version still 1)"
expect_exact after-multi never "Node does not exist: $R/m/never" "multi: failed multi created nothing"

# ---------------------------------------------------------------- cleanup
# deleteall lists every node's children, which needs READ there: authenticate for $R/sec.
batch cleanup <<EOF
addauth digest alice:secret
deleteall $R
#> gone
stat $R
#> end
EOF
expect_exact cleanup gone "Node does not exist: $R" "deleteall removes the test root"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
